"""Robustness: clean and mean-corruption top-1 of FP32 and INT8 artifacts, and what hardening buys.

On a real-photo set (``benchmarks/photoset.py``, textures4: brick, grass,
gravel, moon; 64 px patches, validation from the unseen right part of each
photo), ``cnn`` at 32 px is trained four ways with the same seed and epochs:

- ``baseline``: ``--augment flip,rotate,zoom`` (the photo default);
- ``robust``: ``--augment flip,rotate,zoom,robust`` (``edgecls.data.augment``);
- ``robust_randaugment``: the same plus Keras' RandAugment (``--augment …,robust,randaugment``);
- ``adversarial``: the baseline plus ``--adversarial EPS`` (FGSM in every batch).

each at seeds 0, 1 and 2 (augmented training is not bit-reproducible, so one seed's
difference could be luck), all 30 epochs (``--patience 0``: the validation top-1 of
an augmented run swings from epoch to epoch, and early stopping at the default
patience cut some runs at their sixth epoch; the best epoch is kept). Each is
scored by ``edgecls evaluate --corruptions`` (9 camera corruptions x 5 severities,
frames corrupted at 64 px before the resize) and FGSM at ``EPS`` (``edgecls
evaluate --adversarial``); the baseline and the robust model are also
quantized to INT8 TFLite (seed 0) and scored under the same corruptions.

    nice -n 5 python benchmarks/robustness.py   # ~25 min on two cores -> benchmarks/results/robustness.json
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "robustness.json"
WORK = ROOT / "runs" / "bench-robustness"
SIZE, EPOCHS, SEED = 32, 30, 0
SEEDS = (0, 1, 2)  # training seeds: augmented runs are not bit-reproducible (parallel tf.data maps), so three of each
EPS = 4.0  # FGSM, pixel levels of 0..255
TARGET_POINTS, CLEAN_TOLERANCE = 5.0, 1.0
RECIPES = {
    "baseline": {"augment": "flip,rotate,zoom"},
    "robust": {"augment": "flip,rotate,zoom,robust"},
    "robust_randaugment": {"augment": "flip,rotate,zoom,robust,randaugment"},
    "adversarial": {"augment": "flip,rotate,zoom", "adversarial": EPS},
}


def trained_before(config):
    """The finished run of this very config in ``config.out`` (a rerun after a later step failed), else None."""
    from dataclasses import asdict

    from edgecls.train import TrainResult

    run = Path(config.out)
    if not (run / "metrics.json").exists() or not (run / "config.json").exists():
        return None
    recorded = json.loads((run / "config.json").read_text())["options"]
    wanted = json.loads(json.dumps(asdict(config)))
    if {k: v for k, v in recorded.items() if k != "weights"} != {k: v for k, v in wanted.items() if k != "weights"}:
        return None  # weights: None asked for, "none" recorded once resolved
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["model_path"], metrics["run_dir"] = Path(metrics["model_path"]), Path(metrics["run_dir"])
    print(f"{run}: reusing the finished run of the same options", flush=True)
    return TrainResult(**metrics)


def score_model(data: Path, name: str, options: dict, seed: int, *, int8: bool) -> dict:
    """Train (or reuse) one recipe at one seed; its corruption, INT8 and FGSM figures."""
    from edgecls.evaluate.adversarial import evaluate_adversarial
    from edgecls.evaluate.robustness import evaluate_corruptions
    from edgecls.quantize import quantize
    from edgecls.quantize.config import QuantizeConfig
    from edgecls.train import TrainConfig, train

    out = WORK / (name if seed == 0 else f"{name}-seed{seed}")
    config = TrainConfig(
        data=str(data), model="cnn", img_size=SIZE, epochs=EPOCHS, patience=0, seed=seed, out=str(out), **options
    )
    result = trained_before(config) or train(config)
    artifacts = {"fp32 keras": result.model_path}
    if int8 and name in ("baseline", "robust"):
        quantized = quantize(result.model_path, QuantizeConfig(calib=str(data / "train"), formats=("tflite",)))
        artifacts["int8 tflite"] = Path(quantized.artifacts[0].path)
    scores = {}
    for label, path in artifacts.items():
        corrupted = evaluate_corruptions(path, str(data), seed=SEED)
        scores[label] = {
            "path": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            "clean_top1": corrupted.clean_top1,
            "mean_corruption_top1": corrupted.mean_corruption_top1,
            "corruptions": corrupted.corruptions,
        }
    attacked = evaluate_adversarial(result.model_path, str(data), EPS, seed=SEED)
    entry = {
        "options": {"model": "cnn", "img_size": SIZE, "epochs": EPOCHS, "patience": 0, "seed": seed, **options},
        "train_seconds": result.seconds,
        "epochs_run": result.epochs_run,
        "artifacts": scores,
        "fgsm_top1": attacked.fgsm_top1,
        "pgd_top1": attacked.pgd_top1,
        "n_val": attacked.n_images,
    }
    print(name, seed, json.dumps({k: v for k, v in entry.items() if k != "artifacts"}), flush=True)
    for label, score in scores.items():
        print(f"  {label}: clean {score['clean_top1']:.4f} mean corruption {score['mean_corruption_top1']:.4f}")
    return entry


def main() -> None:
    from photoset import TEXTURES4, make_photoset

    started = time.time()
    data = WORK / "textures4"
    if not (data / "val").is_dir():
        make_photoset(data, TEXTURES4, train_per_class=150, val_per_class=50, patch_size=64, seed=SEED)
    models: dict[str, dict] = {}
    for seed in SEEDS:
        for name, options in RECIPES.items():
            models[f"{name} seed {seed}"] = score_model(data, name, options, seed, int8=seed == SEEDS[0])

    def mean(recipe: str, pick) -> float:
        return float(np.mean([pick(models[f"{recipe} seed {seed}"]) for seed in SEEDS]))

    def clean(entry):
        return entry["artifacts"]["fp32 keras"]["clean_top1"]

    def corrupted(entry):
        return entry["artifacts"]["fp32 keras"]["mean_corruption_top1"]

    def fgsm(entry):
        return entry["fgsm_top1"]

    gain = 100 * (mean("robust", corrupted) - mean("baseline", corrupted))
    clean_delta = 100 * (mean("robust", clean) - mean("baseline", clean))
    summary = {
        "seeds": list(SEEDS),
        "note": "FP32 Keras figures, mean over the seeds; each seed's figures and the INT8 rows (first seed) below",
        "epochs": EPOCHS,
        "patience": 0,
        "baseline_clean_top1": round(mean("baseline", clean), 4),
        "baseline_mean_corruption_top1": round(mean("baseline", corrupted), 4),
        "robust_clean_top1": round(mean("robust", clean), 4),
        "robust_mean_corruption_top1": round(mean("robust", corrupted), 4),
        "robust_mean_corruption_gain_points": round(gain, 2),
        "robust_gain_points_per_seed": [
            round(100 * (corrupted(models[f"robust seed {s}"]) - corrupted(models[f"baseline seed {s}"])), 2)
            for s in SEEDS
        ],
        "robust_clean_delta_points": round(clean_delta, 2),
        "robust_target_met": bool(gain >= TARGET_POINTS and abs(clean_delta) <= CLEAN_TOLERANCE),
        "target": f">= {TARGET_POINTS:g} points mean corruption top-1 at clean top-1 within {CLEAN_TOLERANCE:g} point",
        "fgsm_epsilon": EPS,
        "fgsm_top1_baseline": round(mean("baseline", fgsm), 4),
        "fgsm_top1_robust": round(mean("robust", fgsm), 4),
        "robust_randaugment_clean_top1": round(mean("robust_randaugment", clean), 4),
        "robust_randaugment_mean_corruption_top1": round(mean("robust_randaugment", corrupted), 4),
        "fgsm_top1_adversarial": round(mean("adversarial", fgsm), 4),
        "adversarial_fgsm_gain_points": round(100 * (mean("adversarial", fgsm) - mean("baseline", fgsm)), 2),
        "adversarial_clean_top1": round(mean("adversarial", clean), 4),
    }
    report = {
        "benchmark": "robustness",
        "data": "textures4 from benchmarks/photoset.py (150 train / 50 val patches per class, 64 px, seed 0)",
        "protocol": "edgecls evaluate --corruptions: 9 corruptions x severities 1-5, corrupted at 64 px, then resized",
        "summary": summary,
        "models": models,
        "host": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
        "seconds": round(time.time() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
