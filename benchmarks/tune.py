"""Does ``edgecls tune`` beat the obvious answers under a latency budget? (issue 41)

Writes ``benchmarks/results/tune.json``. Photos10 (``benchmarks/photoset.py``), the host target, LiteRT, 1 thread.
The budget is half the p50 of MobileNetV2 α 1.0 INT8 at 96 px on this host (the untrained network: latency does
not depend on the weights). Side by side, each given the same wall clock (``--minutes``, default 60):

- (a) ``edgecls tune`` with the space below: its best feasible trial, its front, the front's hypervolume;
- (b) a uniform MobileNetV2 width x input-size grid, INT8, every point trained the full budget in order (the
  obvious search: no gate, no halving) until the clock runs out; its feasible points against the same budget;
- (c) the defaults: ``edgecls train --data photos10 --model mobilenetv2``, then INT8, with its latency.

Checks: tune's best feasible top-1 ≥ the grid's, its hypervolume ≥ the grid's; the share of sampled candidates
rejected before training and the training time that saved; for every front trial, the pre-training latency within
10 % of the final artifact's. Both searches are Optuna studies in ``--workdir`` (``tune/`` and ``grid/``): run the
script again after an interruption, or in parts (``--part tune``), and each continues with the time it has left
(the time spent is recorded after every trial).

    nice -n 10 python benchmarks/tune.py                      # all of it: about 2 x 60 min + the defaults (~25 min)
    nice -n 10 python benchmarks/tune.py --part tune          # (a) only, resumable
    nice -n 10 python benchmarks/tune.py --tiny --workdir /tmp/tune-tiny   # the script itself, in a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photoset import PHOTOS10, make_photoset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "tune.json"
THREADS = 1
PARTS = ("budget", "tune", "grid", "defaults")

# The searched space: the small backbones a 2-core budget can train, widths, sizes, cuts, precisions.
TUNE_SPACE = """
backbones = ["cnn", "mobilenetv2", "mobilenetv3small", "mobilenetv3large", "efficientnetb0"]
alphas = [0.35, 0.5, 0.75, 1.0]
sizes = [48, 64, 96]
ratios = [0.0, 0.25, 0.5]
precisions = ["int8", "fp32"]
weights = ["imagenet", "none"]

[grid]
backbone = "mobilenetv2"
alphas = [0.35, 0.5, 1.0]
sizes = [64, 96]

[training]
epochs = {epochs}
rung_epochs = {rung}
promote = 0.34
prune_finetune_epochs = {finetune}

[measure]
rounds = 3
runs = 50
warmup = 10
"""
# (b): the plain grid, trained in order; its budget is applied afterwards (no gate).
GRID_SPACE = """
backbones = ["mobilenetv2"]
alphas = [0.35, 0.5, 0.75, 1.0]
sizes = [48, 64, 96]
ratios = [0.0]
precisions = ["int8"]
weights = ["imagenet", "none"]

[grid]
backbone = "mobilenetv2"

[training]
epochs = {epochs}
rung_epochs = {epochs}
prune_finetune_epochs = 0

[measure]
rounds = 3
runs = 50
warmup = 10
"""
FULL = {"epochs": 12, "rung": 3, "finetune": 3, "train": 80, "val": 30, "patch": 96}
TINY = {"epochs": 1, "rung": 1, "finetune": 1, "train": 8, "val": 4, "patch": 48}
TINY_SPACE = """
backbones = ["cnn", "mobilenetv2"]
alphas = [0.35]
sizes = [32, 48]
ratios = [0.0, 0.5]
precisions = ["int8"]

[grid]
backbone = "mobilenetv2"

[training]
epochs = 1
rung_epochs = 1
prune_finetune_epochs = 1

[measure]
rounds = 2
runs = 10
warmup = 2
"""


def measure_budget(folder: Path) -> dict[str, Any]:
    """Half the p50 of an (untrained) MobileNetV2 α 1.0 INT8 at 96 px here, 1 thread: through tune's own gate."""
    from edgecls.data import load_images
    from edgecls.runtime.metadata import ModelInfo
    from edgecls.runtime.targets import get_target
    from edgecls.tune.gates import Device, measure_candidate
    from edgecls.tune.space import Choices, Measuring

    labels = tuple(sorted(p.name for p in (folder / "train").iterdir()))
    images, _, _ = load_images(folder / "train", image_size=(96, 96), channel_order="RGB", class_names=labels)
    reference = Choices("mobilenetv2", 1.0, 96, "none", 0.0, "int8")
    candidate = measure_candidate(
        reference, info=ModelInfo(labels, (96, 96), 3, "RGB"), calibration=images.images[:32],
        devices=[Device(get_target("host"), None, THREADS)], measuring=Measuring(rounds=5, runs=100, warmup=10),
    )  # fmt: skip
    return {
        "reference": reference.label(),
        "reference_p50_ms": candidate.latency.p50_ms,
        "max_latency_ms": round(candidate.latency.p50_ms / 2, 4),
        "where": candidate.latency.where,
    }


def run_study(name: str, space_text: str, folder: Path, work: Path, state: dict, *, budget_ms: float, minutes: float,
              trials: int | None = None) -> dict[str, Any]:  # fmt: skip
    """An ``edgecls tune`` study with the time left of ``minutes`` (the time spent is saved after every trial)."""
    from edgecls.tune import TuneConfig, tune

    space = work / f"{name}.toml"
    space.write_text(space_text)
    spent = state.setdefault(f"{name}_seconds", 0.0)
    left = minutes * 60 - spent
    if left <= 0:
        from edgecls.tune import show

        return show(work / name).to_dict()
    started = time.monotonic()

    def account(row: dict[str, Any]) -> None:
        state[f"{name}_seconds"] = spent + time.monotonic() - started
        save_state(work, state)
        print(f"{name} trial {row['number']}: {row['verdict']} top-1 {row['top1']} p50 {row['latency_ms']}", flush=True)

    config = TuneConfig(
        data=str(folder), max_latency_ms=budget_ms, target="host", out=str(work / name),
        trials=trials, time_budget_s=left, space=str(space), threads=THREADS,
    )  # fmt: skip
    result = tune(config, on_trial=account)
    state[f"{name}_seconds"] = spent + time.monotonic() - started
    save_state(work, state)
    return result.to_dict()


def grid_points(work: Path, budget_ms: float) -> dict[str, Any]:
    """(b)'s trained points, judged against the real budget afterwards."""
    from edgecls.tune import load_saved_study
    from edgecls.tune.report import hypervolume

    study = load_saved_study(work / "grid").study
    points = [
        {"number": t.number, "params": t.user_attrs["choices"], "top1": t.values[0], "latency_ms": t.values[1],
         "latency_spread_ms": t.user_attrs["latency"]["spread_ms"], "feasible": t.values[1] <= budget_ms}
        for t in study.get_trials() if t.state.name == "COMPLETE" and "artifact" in t.user_attrs
    ]  # fmt: skip
    feasible = [p for p in points if p["feasible"]]
    return {
        "points": points,
        "best_feasible": max(feasible, key=lambda p: p["top1"]) if feasible else None,
        "hypervolume": hypervolume([(p["latency_ms"], p["top1"]) for p in feasible], max_latency_ms=budget_ms),
    }


def run_defaults(folder: Path, work: Path, *, epochs: int | None) -> dict[str, Any]:
    """(c): ``edgecls train --data photos10 --model mobilenetv2`` (the defaults), then INT8; top-1 and latency."""
    from edgecls.evaluate import evaluate
    from edgecls.models.pretrained import imagenet_weights_cached
    from edgecls.quantize import QuantizeConfig, quantize
    from edgecls.quantize.calibration import CalibDataConfig, make_calibration_folder
    from edgecls.runtime.targets import get_target
    from edgecls.train import TrainConfig, train
    from edgecls.tune.gates import Device, measure_latency
    from edgecls.tune.space import Measuring

    data = str(folder)
    started = time.monotonic()
    # the default start is ImageNet for a photo folder; offline without Keras' file, edgecls train needs --weights none
    weights = None if imagenet_weights_cached("mobilenetv2", alpha=1.0, image_size=(96, 96)) else "none"
    config = TrainConfig(data=data, model="mobilenetv2", epochs=epochs, weights=weights, out=str(work / "defaults"))
    trained = train(config)
    calib = work / "defaults-calib"
    if not calib.is_dir():
        make_calibration_folder(CalibDataConfig(source=data, out=str(calib)))
    quantized = quantize(trained.model_path, QuantizeConfig(calib=str(calib), formats=("tflite",)))
    artifact = Path(quantized.artifacts[0].path)
    latency = measure_latency(artifact, [Device(get_target("host"), None, THREADS)], Measuring(3, 50, 10))
    return {
        "command": "edgecls train --data photos10 --model mobilenetv2"
        + (" --weights none" if weights else "")
        + ", then edgecls quantize --int8",
        "weights": trained.weights,
        "epochs_run": trained.epochs_run,
        "top1": evaluate(artifact, data).top1,
        "latency_ms": latency.p50_ms,
        "latency_spread_ms": latency.spread_ms,
        "seconds": round(time.monotonic() - started, 1),
    }


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    budget = results["budget"]["max_latency_ms"]
    tune, grid = results.get("tune"), results.get("grid")
    checks: dict[str, Any] = {}
    if tune:
        front = tune["front"]
        checks["pretrain_within_10_percent"] = all(
            abs(p["pretrain_latency_ms"] / p["latency_ms"] - 1) <= 0.10 for p in front
        )
        checks["rejected_before_training_share"] = tune["gates"]["rejected_share"]
        checks["training_minutes_saved"] = round(tune["gates"]["training_seconds_saved"] / 60, 1)
        from edgecls.tune.report import hypervolume

        tune["hypervolume"] = hypervolume([(p["latency_ms"], p["top1"]) for p in front], max_latency_ms=budget)
    if tune and grid:
        best_grid = grid["best_feasible"]["top1"] if grid["best_feasible"] else 0.0
        best_tune = tune["best"]["top1"] if tune["best"] else 0.0
        checks["tune_best_at_least_grid_best"] = best_tune >= best_grid
        checks["tune_hypervolume_at_least_grid"] = tune["hypervolume"] >= grid["hypervolume"]
    return checks


def save_state(work: Path, state: dict) -> None:
    (work / "state.json").write_text(json.dumps(state, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, help="wall clock of each search, (a) and (b) (default 60; --tiny 2)")
    parser.add_argument("--part", choices=(*PARTS, "all"), default="all")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-tune"))
    parser.add_argument("--tiny", action="store_true", help="a few-minute run of the script (results in --workdir)")
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else FULL
    args.minutes = args.minutes or (2.0 if args.tiny else 60.0)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    state = json.loads((work / "state.json").read_text()) if (work / "state.json").is_file() else {}
    folder = work / "photos10"
    if not (folder / "train").is_dir():
        make_photoset(folder, PHOTOS10, train_per_class=sizes["train"], val_per_class=sizes["val"],
                      patch_size=sizes["patch"])  # fmt: skip
    output = work / "tune.json" if args.tiny else RESULTS
    results = json.loads(output.read_text()) if output.is_file() else {}
    results["host"] = f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} cores"
    parts = PARTS if args.part == "all" else ("budget", args.part)
    if "budget" not in results or "budget" in parts and args.part == "budget":
        results["budget"] = measure_budget(folder)
    budget = results["budget"]["max_latency_ms"]
    print(f"budget: {budget:.3f} ms (half of {results['budget']['reference']})", flush=True)
    epochs = {key: sizes[key] for key in ("epochs", "rung", "finetune")}
    if "tune" in parts:
        space = TINY_SPACE if args.tiny else TUNE_SPACE.format(**epochs)
        results["tune"] = run_study("tune", space, folder, work, state, budget_ms=budget, minutes=args.minutes)
    if "grid" in parts:
        space = GRID_SPACE.format(epochs=sizes["epochs"])
        run_study("grid", space, folder, work, state, budget_ms=1e9, minutes=args.minutes, trials=12)
        results["grid"] = grid_points(work, budget)
    if "defaults" in parts:
        results["defaults"] = run_defaults(folder, work, epochs=1 if args.tiny else None)
        results["defaults"]["feasible"] = results["defaults"]["latency_ms"] <= budget
    results["checks"] = summarise(results)
    results["protocol"] = {"minutes": args.minutes, "threads": THREADS, "data": "photos10", **sizes}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results["checks"], indent=2))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
