"""The measurements behind edgecls' training, pruning and distillation defaults (issue 26).

Two kinds of run, each appended as one row to a results file (``benchmarks/results/``), so a grid is a
list of commands and every default names the rows it was chosen from:

``scratch``: ``edgecls.train.train`` from scratch on ``digits`` or a photo set cut by
``benchmarks/photoset.py`` (textures4: 150/50 patches a class; photos10: 80/30; 64 px), with only
``--model``, ``--weights none``, ``--img-size 64``, ``--epochs`` and ``--seed`` given and each
``KEY=VALUE`` TrainConfig option of the row on top (the setting screened). Row: the kept model's
validation top-1, its best epoch, the epochs run, the per-epoch validation and training accuracy.
File: ``defaults_scratch.json``.

``chain``: a teacher trained as above (``--train KEY=VALUE``), then ``edgecls.prune.prune`` at
``--ratio 0.5`` with the row's ``--prune`` options (``data`` given, so its top-1 before and after are
on the teacher's own validation split), then for each ``--distill`` spec ``edgecls.distill.distill``
of the pruned student from its unpruned teacher. Rows: the prune drop in points, and the distilled
student's gap to the teacher in points, with the fine-tuning and distillation settings the run resolved.
With no ``--train``/``--prune`` options a row is a ``defaults`` row: what ``edgecls prune MODEL --ratio 0.5
--data DATA`` and ``edgecls distill --teacher MODEL --student PRUNED --epochs 10`` give. File:
``defaults_chain.json``.

    nice -n 10 python benchmarks/defaults.py scratch photos10 mobilenetv3small 25 0 learning_rate=0.003
    nice -n 10 python benchmarks/defaults.py chain digits cnn 0 --distill epochs=10
    nice -n 10 python benchmarks/defaults.py chain textures4 mobilenetv3small 0 --epochs 25 --distill epochs=10

Single runs are noisy here (the augmentation pipeline maps in parallel, so even one seed differs by a
few points between two runs): the defaults were chosen on the mean over the rows of a setting, and
confirmed over two seeds on every backbone by ``benchmarks/backbones.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photoset import SETS, make_photoset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PATCHES = {"textures4": (150, 50), "photos10": (80, 30)}
IMAGE_SIZE = 64


def parse_options(pairs: list[str]) -> dict:
    """``KEY=VALUE`` (several per item, comma-separated), values as JSON where they parse."""
    options = {}
    for pair in (part for item in pairs for part in item.split(",") if part):
        key, _, value = pair.partition("=")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def append_row(path: Path, row: dict, description: str) -> None:
    from edgecls.base.fileio import write_json

    existing = json.loads(path.read_text()) if path.exists() else {"description": description, "runs": []}
    existing["runs"].append(row)
    write_json(path, existing)


def data_folder(name: str, scratch: Path) -> str:
    if name == "digits":
        return "digits"
    train, val = PATCHES[name]
    return str(make_photoset(scratch / name, SETS[name], train_per_class=train, val_per_class=val, patch_size=64))


def train_config(data: str, spec: str, epochs: int, seed: int, options: dict, out: Path):
    from edgecls.train import TrainConfig

    name, _, alpha = spec.partition("@")
    given = dict(data=data, model=name, weights="none", epochs=epochs, seed=seed, out=str(out))
    if data != "digits":
        given["img_size"] = IMAGE_SIZE
    if alpha:
        given["alpha"] = float(alpha)
    return TrainConfig(**{**given, **options})


def scratch(args) -> None:
    from edgecls.train import read_history, train

    options = parse_options(args.options)
    with tempfile.TemporaryDirectory() as tmp:
        config = train_config(
            data_folder(args.data, Path(tmp)), args.model, args.epochs, args.seed, options, Path(tmp) / "run"
        )
        started = time.perf_counter()
        result = train(config)
        history = read_history(result.run_dir)
        recorded = json.loads((result.run_dir / "config.json").read_text())
    chance = 1.0 / (10 if args.data == "digits" else len(SETS[args.data]))
    row = {
        "data": args.data,
        "model": args.model,
        "epochs": args.epochs,
        "seed": args.seed,
        "image_size": None if args.data == "digits" else IMAGE_SIZE,
        "options": options,  # given on top of the defaults; "setting": what the run resolved them to
        "setting": {key: recorded["options"][key] for key in ("batch_size", "learning_rate", "augment", "patience")}
        | {"precise_bn": recorded["precise_bn"]},
        "val_top1": round(result.val_accuracy, 4),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "epochs_at_chance": sum(value <= chance + 0.05 for value in history.get("val_accuracy", [])),
        "val_per_epoch": [round(v, 3) for v in history.get("val_accuracy", [])],
        "train_per_epoch": [round(v, 3) for v in history.get("accuracy", [])],
        "chance_warning": bool(result.warnings),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(row), flush=True)
    append_row(args.out or RESULTS / "defaults_scratch.json", row, "benchmarks/defaults.py scratch rows")


def chain(args) -> None:
    from edgecls.distill import DistillConfig, distill
    from edgecls.prune import PruneConfig, prune
    from edgecls.train import train

    train_options, prune_options = parse_options(args.train), parse_options(args.prune)
    out = args.out or RESULTS / "defaults_chain.json"
    with tempfile.TemporaryDirectory() as tmp:
        data = data_folder(args.data, Path(tmp))
        teacher = train(train_config(data, args.model, args.epochs, args.seed, train_options, Path(tmp) / "teacher"))
        teacher_options = json.loads((teacher.run_dir / "config.json").read_text())["options"]
        pruned_path = Path(tmp) / "pruned.keras"
        started = time.perf_counter()
        pruned = prune(
            teacher.model_path,
            PruneConfig(**{"ratio": 0.5, "data": data, "seed": args.seed, "out": str(pruned_path), **prune_options}),
        )
        rounds = pruned.finetune.get("rounds", [{}])
        base = {
            "source": "defaults" if not (train_options or prune_options) else "benchmarks/defaults.py chain",
            "data": args.data,
            "model": args.model,
            "seed": args.seed,
            "teacher": {key: teacher_options[key] for key in ("epochs", "learning_rate", "img_size", "augment")},
            "prune": {
                "ratio": 0.5,
                **prune_options,
                "finetune_epochs": sum(len(round_["val_accuracy"]) for round_ in rounds if "val_accuracy" in round_),
                "learning_rate": pruned.finetune.get("learning_rate"),
            },
            "top1_teacher": round(pruned.top1_before, 4),
            "top1_pruned": round(pruned.top1_after, 4),
            "prune_drop_points": round(100 * (pruned.top1_before - pruned.top1_after), 2),
            "macs_ratio": round(pruned.macs_after / pruned.macs_before, 3),
            "prune_s": round(time.perf_counter() - started, 1),
        }
        append_row(out, {**base, "kind": "prune"}, "benchmarks/defaults.py chain rows")
        print(json.dumps(base), flush=True)
        for index, spec in enumerate(args.distill):
            options = parse_options([spec])
            config = {"seed": args.seed, "out": str(Path(tmp) / f"distill{index}"), **options}
            started = time.perf_counter()
            result = distill(DistillConfig(teacher=str(teacher.model_path), student=str(pruned_path), **config))
            row = {
                **base,
                "kind": "distill",
                "distill": {**options, "temperature": result.temperature, "kd_weight": result.kd_weight},
                "student_top1": round(result.student_top1, 4),
                "gap_points": round(100 * (result.teacher_top1 - result.student_top1), 2),
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "distill_s": round(time.perf_counter() - started, 1),
            }
            append_row(out, row, "benchmarks/defaults.py chain rows")
            print(json.dumps(row), flush=True)


def main(argv=None) -> None:
    import logging

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("scratch", help="one from-scratch training run")
    one.add_argument("data", choices=["digits", *sorted(SETS)])
    one.add_argument("model", help="registry name, or mobilenetv2@0.35 for a width")
    one.add_argument("epochs", type=int)
    one.add_argument("seed", type=int)
    one.add_argument("options", nargs="*", help="KEY=VALUE TrainConfig options")
    one.add_argument("--out", type=Path)
    one.set_defaults(run=scratch)
    two = commands.add_parser("chain", help="train, prune at 0.5, distill the pruned student")
    two.add_argument("data", choices=["digits", *sorted(SETS)])
    two.add_argument("model")
    two.add_argument("seed", type=int)
    two.add_argument("--epochs", type=int, default=20, help="the teacher's epochs")
    two.add_argument("--train", nargs="*", default=[])
    two.add_argument("--prune", nargs="*", default=[])
    two.add_argument("--distill", nargs="*", default=[], help="one DistillConfig spec per run: k=v,k=v")
    two.add_argument("--out", type=Path)
    two.set_defaults(run=chain)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.run(args)


if __name__ == "__main__":
    main()
