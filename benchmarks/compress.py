"""Compression on the backbones users deploy (issue 40): prune to half the MACs, uniform beside it, distil, latency.

For each set × backbone × seed, through the library functions the commands call, every option at its default:

1. ``teacher``: ``edgecls.train.train(TrainConfig(data=SET/train, model, img_size=64, weights="none", seed))``.
2. ``scan``: ``edgecls.prune.prune(teacher, PruneConfig(target_macs=0.5, data=SET/train, seed))``.
3. ``uniform``: ``prune`` at the uniform ``ratio`` whose MACs are nearest the scan's (found on the pruner's own MACs
   count), the same recipe otherwise: what a user had before a budget existed.
4. ``distill``: ``edgecls.distill.distill(DistillConfig(teacher, student=the scan's pruned model, data, seed))``.
5. ``latency``: the INT8 TFLite of the teacher, the scan's and the uniform model (``edgecls.quantize``, calibrated on
   300 training images), timed in one process, interleaved, 1 LiteRT thread (``prune.measure.compare_latency``).
6. ``latency_target`` (seed 0): ``prune(teacher, PruneConfig(target_latency_ms=0.6 × the teacher's INT8 p50,
   target="host", threads=1, data))``, and a uniform cut searched to the same measured latency, both fine-tuned.

Top-1 is measured on SET/val: patches from another region of each photo than any training or held-out image
(``benchmarks/photoset.py``), 1,000 images a set. Every step's row is kept in ``--work``; a second run skips what is
there, so the benchmark runs in parts. ``--steps`` picks steps; ``--digits`` adds the digits chain (cnn,
``--ratio 0.5`` then ``distill``, seeds 0-2) the earlier defaults were chosen on.

    nice python benchmarks/compress.py --sets textures4,photos10 --models mobilenetv2,mobilenetv3small,efficientnetb0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from photoset import SETS, make_photoset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "compress.json"
PATCHES = {"textures4": (150, 250), "photos10": (100, 100), "photos6": (150, 100)}  # train / test per class
IMAGE_SIZE = 64
STEPS = ("teacher", "scan", "uniform", "distill", "latency", "latency_target")


def data_set(work: Path, name: str) -> Path:
    root = work / "data" / name
    if not (root / "val").is_dir():
        train, test = PATCHES[name]
        make_photoset(root, SETS[name], train_per_class=train, val_per_class=test, patch_size=IMAGE_SIZE, seed=0)
    return root


def step(folder: Path, name: str, run) -> dict[str, Any]:
    """``run()``'s row, kept in ``folder/name.json``: a row already there is read, not run again."""
    path = folder / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    started = time.time()
    row = run()
    row["seconds"] = round(time.time() - started, 1)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1))
    print(f"{folder.name} {name}: {json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)})}",
          file=sys.stderr)  # fmt: skip
    return row


def test_top1(model_path: str, data: Path) -> float:
    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.data.folders import load_images
    from edgecls.evaluate import top1_accuracy

    images, _, _ = load_images(data / "val", image_size=(IMAGE_SIZE, IMAGE_SIZE), channel_order="RGB")
    return round(top1_accuracy(load_keras_model(model_path), images), 4)


def teacher(data: Path, model: str, seed: int, folder: Path) -> dict[str, Any]:
    from edgecls.train import TrainConfig, train

    result = train(
        TrainConfig(data=str(data / "train"), model=model, img_size=IMAGE_SIZE, weights="none", seed=seed,
                    out=str(folder / "teacher"))
    )  # fmt: skip
    return {
        "model_path": str(result.model_path),
        "heldout_top1": round(result.val_accuracy, 4),
        "test_top1": test_top1(result.model_path, data),
        "epochs": result.phase_epochs,
    }


def pruned(teacher_row: dict, data: Path, seed: int, out: Path, **options: Any) -> dict[str, Any]:
    from edgecls.prune import PruneConfig, prune

    config = PruneConfig(data=str(data / "train"), seed=seed, out=str(out), measure_tflite=False, **options)
    result = prune(teacher_row["model_path"], config)
    return {
        "model_path": result.model_path,
        "options": options,
        "macs_fraction": round(result.macs_after / result.macs_before, 4),
        "heldout_top1": round(result.top1_after, 4),
        "test_top1": test_top1(result.model_path, data),
        "drop_points": round(100 * (teacher_row["test_top1"] - test_top1(result.model_path, data)), 2),
        "budget": result.budget,
        "finetune_epochs": [r["epochs"] for r in result.finetune.get("rounds", [])],
    }


def uniform_ratio_for(teacher_path: str, macs_fraction: float) -> float:
    """The uniform ratio whose MACs (the pruner's own count, round_to 8) are nearest ``macs_fraction``."""
    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.prune.allocate import MacsModel
    from edgecls.prune.graph import analyze
    from edgecls.prune.plan import kept_count

    model = load_keras_model(teacher_path)
    graph = analyze(model)
    macs = MacsModel.of(model, graph)
    base = macs.macs({})

    def fraction(ratio: float) -> float:
        kept = {g.name: min(g.channels, kept_count(g.channels, ratio, min_channels=8, round_to=8))
                for g in graph.groups if g.prunable}  # fmt: skip
        return macs.macs(kept) / base

    ratios = [r / 100 for r in range(0, 96)]
    return min(ratios, key=lambda r: abs(fraction(r) - macs_fraction))


def distilled(teacher_row: dict, student_row: dict, data: Path, seed: int, out: Path) -> dict[str, Any]:
    from edgecls.distill import DistillConfig, distill

    result = distill(DistillConfig(teacher=teacher_row["model_path"], student=student_row["model_path"],
                                   data=str(data / "train"), seed=seed, out=str(out)))  # fmt: skip
    top1 = test_top1(result.model_path, data)
    return {
        "model_path": result.model_path,
        "kept": result.kept,
        "heldout_top1": round(result.student_top1, 4),
        "heldout_distilled": round(result.distilled_top1 or result.student_top1, 4),
        "test_top1": top1,
        "behind_teacher_points": round(100 * (teacher_row["test_top1"] - top1), 2),
        "vs_prune_finetune_points": round(100 * (top1 - student_row["test_top1"]), 2),
    }


def int8(model_path: str, data: Path, out: Path) -> Path:
    from edgecls.quantize import QuantizeConfig, quantize

    result = quantize(model_path, QuantizeConfig(calib=str(data / "train"), formats=("tflite",), out=str(out)))
    return Path(result.artifacts[0].path)


def latency(rows: dict[str, dict], data: Path, folder: Path) -> dict[str, Any]:
    from edgecls.prune.measure import compare_latency

    names = [name for name in ("teacher", "scan", "uniform") if name in rows]
    paths = [int8(rows[name]["model_path"], data, folder / "int8" / name) for name in names]
    figures = compare_latency(paths, threads=1, runs=400, rounds=40)
    p50 = dict(zip(names, figures["latency_ms"]))
    return {
        "int8_p50_ms": p50,
        "ratio_to_teacher": {name: round(p50[name] / p50["teacher"], 4) for name in names},
        "where": f"{figures['where']}, {figures['engine']} {figures['provider']}, {figures['threads']} thread, "
        f"{figures['runs']} runs interleaved",
    }


def host_int8_target(folder: Path) -> Path:
    """This host as a target whose first precision is INT8: the budget is 0.6 x the teacher's INT8 latency, so its
    candidates must be INT8 too (the packaged ``host`` lists FP32 first, and an unpruned FP32 MobileNetV3-Small
    already runs under that budget here: the search then has nothing to cut)."""
    from importlib.resources import files

    text = files("edgecls.runtime.targets").joinpath("host.toml").read_text()
    text = text.replace('name = "host"', 'name = "host-int8"').replace('aliases = ["local"]', "aliases = []")
    text = text.replace('precisions = ["fp32", "fp16", "int8"]', 'precisions = ["int8"]')
    path = folder / "host-int8.toml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def latency_target(rows: dict[str, dict], data: Path, seed: int, folder: Path) -> dict[str, Any]:
    """A latency budget, and a uniform cut searched to the same measured latency (both fine-tuned)."""
    budget = round(0.6 * rows["latency"]["int8_p50_ms"]["teacher"], 4)
    common = dict(target=str(host_int8_target(folder)), threads=1)
    scanned = pruned(rows["teacher"], data, seed, folder / "latency_scan" / "model.keras",
                     target_latency_ms=budget, **common)  # fmt: skip
    # the uniform cut whose MACs equal the scan's result is near the same latency; measured below, both sides
    ratio = uniform_ratio_for(rows["teacher"]["model_path"], scanned["macs_fraction"])
    uniform = pruned(rows["teacher"], data, seed, folder / "latency_uniform" / "model.keras", ratio=ratio)
    paths = [
        int8(row["model_path"], data, folder / "int8" / name) for name, row in (("scan", scanned), ("uniform", uniform))
    ]
    from edgecls.prune.measure import compare_latency

    figures = compare_latency(paths, threads=1, runs=400, rounds=40)
    reached = scanned["budget"]["reached"]["latency_ms"]
    return {
        "budget_ms": budget,
        "scan": {**scanned, "search_latency_ms": reached, "int8_p50_ms": figures["latency_ms"][0]},
        "uniform": {**uniform, "ratio": ratio, "int8_p50_ms": figures["latency_ms"][1]},
        "within_5_percent": abs(figures["latency_ms"][0] - budget) <= 0.05 * budget
        or figures["latency_ms"][0] <= budget,
    }


def run_one(work: Path, set_name: str, model: str, seed: int, steps: tuple[str, ...]) -> dict[str, Any]:
    data = data_set(work, set_name)
    folder = work / set_name / f"{model}-s{seed}"
    rows: dict[str, Any] = {}
    rows["teacher"] = step(folder, "teacher", lambda: teacher(data, model, seed, folder))
    if "scan" in steps:
        rows["scan"] = step(folder, "scan", lambda: pruned(rows["teacher"], data, seed, folder / "scan" / "model.keras",
                                                           target_macs=0.5))  # fmt: skip
    if "uniform" in steps and "scan" in rows:
        ratio = uniform_ratio_for(rows["teacher"]["model_path"], rows["scan"]["macs_fraction"])
        rows["uniform"] = step(
            folder,
            "uniform",
            lambda: {
                **pruned(rows["teacher"], data, seed, folder / "uniform" / "model.keras", ratio=ratio),
                "ratio": ratio,
            },
        )
    if "distill" in steps and "scan" in rows:
        rows["distill"] = step(
            folder, "distill", lambda: distilled(rows["teacher"], rows["scan"], data, seed, folder / "distill")
        )
    if "latency" in steps and "scan" in rows:
        rows["latency"] = step(folder, "latency", lambda: latency(rows, data, folder))
    if "latency_target" in steps and seed == 0 and "latency" in rows:
        rows["latency_target"] = step(folder, "latency_target", lambda: latency_target(rows, data, seed, folder))
    return rows


def summary(runs: dict[str, dict[str, dict[str, dict]]]) -> dict[str, Any]:
    """Per set and backbone: each figure's mean over seeds and every seed's value."""
    import numpy as np

    figures = {
        "teacher_test_top1": lambda r: r["teacher"]["test_top1"],
        "scan_drop_points": lambda r: r["scan"]["drop_points"],
        "scan_macs_fraction": lambda r: r["scan"]["macs_fraction"],
        "uniform_drop_points": lambda r: r["uniform"]["drop_points"],
        "uniform_macs_fraction": lambda r: r["uniform"]["macs_fraction"],
        "distill_behind_teacher_points": lambda r: r["distill"]["behind_teacher_points"],
        "distill_vs_prune_points": lambda r: r["distill"]["vs_prune_finetune_points"],
        "scan_int8_latency_ratio": lambda r: r["latency"]["ratio_to_teacher"]["scan"],
        "uniform_int8_latency_ratio": lambda r: r["latency"]["ratio_to_teacher"]["uniform"],
    }
    out: dict[str, Any] = {}
    for set_name, models in runs.items():
        for model, seeds in models.items():
            entry = {}
            for name, get in figures.items():
                values = []
                for rows in seeds.values():
                    try:
                        values.append(get(rows))
                    except KeyError:
                        pass
                if values:
                    entry[name] = {"mean": round(float(np.mean(values)), 4), "seeds": values}
            out[f"{set_name}/{model}"] = entry
    return out


def host() -> str:
    """The CPU the figures were measured on: its model, whether it has VNNI, its core count."""
    from edgecls.runtime.onnx_int8 import this_cpu

    cpu = this_cpu()
    return f"{cpu.model} ({cpu.machine}, {'VNNI' if cpu.vnni else 'no VNNI'}), {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="textures4,photos10")
    parser.add_argument("--models", default="mobilenetv2,mobilenetv3small,efficientnetb0")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--work", type=Path, default=Path("runs/bench-compress"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.time()
    steps = tuple(args.steps.split(","))
    runs: dict[str, Any] = {}
    for set_name in args.sets.split(","):
        for model in args.models.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows = run_one(args.work, set_name, model, seed, steps)
                runs.setdefault(set_name, {}).setdefault(model, {})[str(seed)] = rows
    document = {
        "benchmark": "compression on real backbones (issue 40)",
        "protocol": __doc__.split("\n\n")[1],
        "data": {name: {"classes": list(SETS[name]), "train_per_class": PATCHES[name][0],
                        "test_per_class": PATCHES[name][1], "image_size": IMAGE_SIZE} for name in args.sets.split(",")},
        "host": host(),
        "summary": summary(runs),
        "runs": runs,
        "seconds": round(time.time() - started, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
