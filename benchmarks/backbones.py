"""Do the registry backbones learn from scratch with the defaults? (issues 15 and 26)

Writes ``benchmarks/results/backbones.json`` (``textures4``) and
``benchmarks/results/backbones_photos10.json`` (``photos10``): for every registry
backbone trained from scratch, the validation top-1 of the model ``edgecls
train`` keeps, per seed, with the epochs it ran, its best epoch and the wall
time, on class folders cut from photographs shipped in scikit-image /
scikit-learn (``benchmarks/photoset.py``: validation patches from another
region of each photo than the training patches).

Protocol (issue 26): the user path with only the options a new user gives.
Each run is ``edgecls.train.train(TrainConfig(data=FOLDER, model=NAME,
weights="none", img_size=64, epochs=EPOCHS, seed=SEED))``, what ``edgecls train
--data FOLDER --model NAME --weights none --img-size 64 --epochs EPOCHS --seed
SEED`` runs (``mobilenetv2@0.35`` adds ``--alpha 0.35``, its width); batch,
learning rate, augmentation, early stopping and the BatchNorm handling are the
library's defaults. ``--option KEY=VALUE`` adds a TrainConfig option to every
run (an ablation: the figures then go to ``--out``, not to the defaults' files).
Targets: textures4, every backbone >= 85 % on every seed; photos10, none at
chance and every one >= 55 %.

    nice -n 10 python benchmarks/backbones.py --set textures4 --epochs 25 --seeds 0,1

A run already in the output file (same model, seed, epochs and options) is kept
and not trained again, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photoset import SETS, make_photoset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
OUTPUTS = {"textures4": RESULTS / "backbones.json", "photos10": RESULTS / "backbones_photos10.json"}
PATCHES = {"textures4": (150, 50), "photos10": (80, 30)}  # training and validation patches per class
IMAGE_SIZE = 64
BACKBONES = (
    "cnn",
    "mobilenetv2@0.35",
    "mobilenetv2",
    "mobilenetv3small",
    "mobilenetv3large",
    "efficientnetb0",
    "efficientnetv2b0",
    "resnet50",
)
TARGETS = {"textures4": 0.85, "photos10": 0.55}


def train_one(spec: str, folder: Path, *, epochs: int, seed: int, options: dict, scratch: Path) -> dict:
    """``edgecls train`` of ``spec`` (``name`` or ``name@alpha``) from scratch with the defaults; its figures."""
    from edgecls.train import TrainConfig, read_history, train

    name, _, alpha = spec.partition("@")
    given = {"alpha": float(alpha)} if alpha else {}
    config = TrainConfig(
        data=str(folder),
        model=name,
        weights="none",
        img_size=IMAGE_SIZE,
        epochs=epochs,
        seed=seed,
        out=str(scratch / f"{spec}-{seed}"),
        **given,
        **options,
    )
    started = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - started
    history = read_history(result.run_dir)
    run_config = json.loads((result.run_dir / "config.json").read_text())
    return {
        "model": spec,
        "seed": seed,
        "epochs": epochs,
        "options": options,
        "val_top1": round(result.val_accuracy, 4),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "chance_warning": bool(result.warnings),
        "val_top1_per_epoch": [round(v, 4) for v in history.get("val_accuracy", [])],
        "train_accuracy_per_epoch": [round(v, 4) for v in history.get("accuracy", [])],
        "resolved": {key: run_config.get(key) for key in ("bn_momentum", "precise_bn")}
        | {key: run_config["options"][key] for key in ("batch_size", "learning_rate", "augment", "patience")},
        "wall_s": round(seconds, 1),
    }


def summary(runs: list[dict], target: float, chance: float) -> dict:
    """Per backbone: the top-1 of each seed, the lowest, and whether the target holds on every seed."""
    table = {}
    for spec in dict.fromkeys(run["model"] for run in runs):
        figures = [run["val_top1"] for run in runs if run["model"] == spec]
        table[spec] = {
            "val_top1": figures,
            "min": min(figures),
            "mean": round(sum(figures) / len(figures), 4),
            "at_chance": any(figure <= chance + 0.05 for figure in figures),
            "meets_target": min(figures) >= target,
        }
    return table


def main(argv=None) -> None:
    from edgecls.base.fileio import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETS), default="textures4")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--models", default=",".join(BACKBONES))
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE TrainConfig option (an ablation)")
    parser.add_argument("--out", type=Path, default=None, help="default: the set's results file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    options = {key: json.loads(value) for key, _, value in (pair.partition("=") for pair in args.option)}
    if options and args.out is None:
        parser.error("--option is an ablation: name its --out file")
    out = args.out or OUTPUTS[args.set]
    train_patches, val_patches = PATCHES[args.set]
    chance = round(1.0 / len(SETS[args.set]), 4)
    done = json.loads(out.read_text())["runs"] if out.exists() else []
    # runs of this protocol already measured (an interrupted sweep); other protocols' runs are replaced
    runs = [run for run in done if run.get("options") == options and run.get("epochs") == args.epochs]
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_photoset(
            Path(tmp) / args.set,
            SETS[args.set],
            train_per_class=train_patches,
            val_per_class=val_patches,
            patch_size=IMAGE_SIZE,
            seed=0,
        )
        for seed in (int(seed) for seed in args.seeds.split(",")):
            for spec in args.models.split(","):
                if any(run["model"] == spec and run["seed"] == seed for run in runs):
                    continue
                run = train_one(spec, folder, epochs=args.epochs, seed=seed, options=options, scratch=Path(tmp))
                runs.append(run)
                print(
                    f"{args.set} {spec:18s} seed {seed}: val top-1 {run['val_top1']:.3f} (best epoch "
                    f"{run['best_epoch']}/{run['epochs_run']}) {run['wall_s']:.0f} s",
                    flush=True,
                )
                write_json(
                    out,
                    {
                        "set": args.set,
                        "classes": list(SETS[args.set]),
                        "train_per_class": train_patches,
                        "val_per_class": val_patches,
                        "image_size": IMAGE_SIZE,
                        "chance": chance,
                        "protocol": "edgecls.train.train(TrainConfig(data, model, weights='none', img_size=64, "
                        "epochs, seed[, alpha])): everything else at the library's defaults"
                        + (f"; ablation: {options}" if options else ""),
                        "target_val_top1": TARGETS[args.set],
                        "host": f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} "
                        "CPUs shared with other jobs (wall times are not benchmarks)",
                        "summary": summary(runs, TARGETS[args.set], chance),
                        "runs": runs,
                    },
                )


if __name__ == "__main__":
    main()
