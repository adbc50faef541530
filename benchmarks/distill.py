"""Benchmark of ``edgecls distill`` (issue 5): what does distillation buy, measured honestly?

Writes ``benchmarks/results/distill.json`` with two experiments, both through
the public ``edgecls.train.train`` / ``edgecls.prune.prune`` /
``edgecls.distill.distill`` functions, on the built-in digits (1,797 8x8
images) written out as PNG folders so that a **test split is held out** from
everything that is selected on:

1. ``kd_gain``: a small-data task where an edge-sized student is not
   saturated. Per draw of the images: 15 training images per class (150), 20
   validation images per class (200: best epoch), 700 test images never used
   for any choice. Teacher: the registry ``cnn`` (111 k parameters) at 16x16
   gray, trained on the draw's training split. Student: a 3.9 k-parameter CNN
   (conv 8 → conv 16 → dense) written to a ``.keras`` file per seed. For each
   draw and seed, the same student file is trained alone (``--baseline``) and
   distilled (T 4, kd-weight 0.9: the CLI defaults), with the same data,
   epochs, schedule and seed; every run's validation and test top-1 are kept.
   Target: distilled ≥ alone + 1 point on average (test).
2. ``prune_recovery``: the digits ``cnn`` (32x32 gray, 20 epochs) pruned at
   ratio 0.5 by ``edgecls prune`` (structured channels, L1), then distilled
   from its unpruned self (T 2, kd-weight 0.5); also fine-tuned alone for the
   same epochs. 500 test images held out. Target: distilled within 0.5 points
   of the unpruned top-1.

Protocol: the settings (learning rate 5e-3, batch 16, 40 epochs, student
width 8, 15 images per class; recovery 20 epochs at batch 32) were chosen in
pilot runs on draw 123 (seeds 1-5), which looked at its validation and test
figures. A first attempt of this script on one fresh draw (draw 7, seeds
11-15; recovery 10 epochs at batch 64, T 4, kd-weight 0.9) measured a mean
test gain of +0.37 points (per seed -0.15, +1.72, 0.00, +0.86, -0.57; teacher
97.0 %, student alone 93.1 %) and a recovery gap of 2.8 points (fine-tuning
alone: 1.6). Because the gain varied that much between draws (draw 123: +0.89
over 5 seeds), the final protocol averages over three draws never looked at
before (1001-1003) with two seeds each. The recovery then got more steps, and
T 2 / kd-weight 0.5, which beat T 4 / 0.9 on draw 123's validation split
(gap 0.77 vs 1.15 points). All figures are Keras top-1 on this host's CPU.

Run: ``.venv/bin/python benchmarks/distill.py [--draws 1001,1002,1003] [--seeds 21,22]`` (or ``make bench``);
about 8-10 minutes on 2 shared cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "distill.json"
DRAWS = (1001, 1002, 1003)  # draws of the images; the pilots used 123, the first attempt 7 (see Protocol)
SEEDS = (21, 22)  # per draw; the pilots used 1-5, the first attempt 11-15
PR_DRAW = 1001

log = logging.getLogger("benchmarks.distill")

# part 1: small data, tiny student
KD_SIZE, KD_PER_CLASS_TRAIN, KD_PER_CLASS_VAL, KD_TEST = 16, 15, 20, 700
KD_EPOCHS, KD_BATCH, KD_LR, KD_TEMPERATURE, KD_WEIGHT, STUDENT_WIDTH = 40, 16, 5e-3, 4.0, 0.9, 8
# part 2: the digits cnn, pruned, then distilled from itself
PR_TEST, PR_VAL_FRACTION, PR_TRAIN_EPOCHS, PR_RATIO = 500, 0.2, 20, 0.5
PR_EPOCHS, PR_BATCH, PR_LR, PR_TEMPERATURE, PR_KD_WEIGHT = 20, 32, 1e-3, 2.0, 0.5


def write_digit_folders(root: Path, *, draw: int, test: int, per_class_train: int | None, per_class_val: int | None, val_fraction: float = 0.2) -> tuple[Path, Path]:
    """``root/data/{train,val}/<digit>/*.png`` and ``root/test/<digit>/*.png`` (8x8 gray, as sklearn ships them).

    The test images are drawn first (``draw`` seeds the draw), stratified; train and val come from the rest.
    """
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target
    rng = np.random.default_rng(draw)
    parts: dict[str, list[int]] = {"test": [], "train": [], "val": []}
    test_per_class = test // 10
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        parts["test"] += members[:test_per_class].tolist()
        rest = members[test_per_class:]
        n_val = per_class_val if per_class_val is not None else int(round(len(rest) * val_fraction))
        n_train = per_class_train if per_class_train is not None else len(rest) - n_val
        parts["val"] += rest[:n_val].tolist()
        parts["train"] += rest[n_val : n_val + n_train].tolist()
    for part, indices in parts.items():
        folder = root / "test" if part == "test" else root / "data" / part
        for index in indices:
            path = folder / str(labels[index]) / f"{index:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), images[index])
    return root / "data", root / "test"


def tiny_student(path: Path, *, seed: int, size: int, labels: tuple[str, ...]) -> Path:
    """conv 8 → conv 16 → flatten → logits → softmax: an edge-sized CNN with the edgecls head contract."""
    import keras
    from keras import layers

    from edgecls.keras_io import save_keras_model
    from edgecls.runtime.metadata import ModelInfo

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 1), name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="normalize")(inputs)
    for block, filters in enumerate((STUDENT_WIDTH, 2 * STUDENT_WIDTH), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
        # momentum 0.9: 10 steps an epoch are too few for the default 0.99 to settle the statistics
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    logits = layers.Dense(len(labels), name="logits")(x)
    model = keras.Model(inputs, layers.Activation("softmax", name="probs")(logits), name="tinycnn")
    info = ModelInfo(labels, (size, size), 1, "GRAY", provenance={"source_model": f"tinycnn width {STUDENT_WIDTH} (benchmarks/distill.py), random init seed {seed}"})
    return save_keras_model(model, path, info)


def test_top1(model_path: str | Path, test_folder: Path, size: int, labels: tuple[str, ...]) -> float:
    from edgecls.data import load_images
    from edgecls.evaluate import predict_scores

    images, _, _ = load_images(test_folder, image_size=(size, size), channel_order="GRAY", class_names=labels)
    return round(float(np.mean(predict_scores(model_path, images).argmax(axis=1) == images.labels)), 4)


def kd_gain(work: Path, draws: tuple[int, ...], seeds: tuple[int, ...]) -> dict:
    """Per draw of the images: one teacher; per seed: a fresh student file, trained alone and distilled."""
    started = time.time()
    per_draw = [kd_gain_on_draw(work / f"kd-{draw}", draw, seeds) for draw in draws]
    runs = [run for entry in per_draw for run in entry["runs"]]
    gains = [run["test_gain_points"] for run in runs]
    mean = lambda values: round(statistics.mean(values), 4)  # noqa: E731
    teacher_test = mean([entry["teacher"]["test_top1"] for entry in per_draw])
    alone = mean([run["alone"]["test_top1"] for run in runs])
    return {
        "task": (f"digits at {KD_SIZE}x{KD_SIZE} gray, {KD_PER_CLASS_TRAIN} train + {KD_PER_CLASS_VAL} val images per class, "
                 f"{KD_TEST} test images held out; {len(draws)} independent draws of the images x {len(seeds)} seeds"),
        "teacher_model": "cnn (registry), trained by edgecls.train on each draw's train split",
        "student_model": f"tinycnn width {STUDENT_WIDTH} (.keras with the edgecls head, fresh random init per draw and seed)",
        "params_macs": per_draw[0]["params_macs"],
        "settings": {"epochs": KD_EPOCHS, "batch_size": KD_BATCH, "learning_rate": KD_LR, "schedule": "cosine (edgecls.train.make_optimizer)",
                     "temperature": KD_TEMPERATURE, "kd_weight": KD_WEIGHT, "best_epoch_by": "val top-1", "augment": "none", "patience": "off"},
        "draws": per_draw,
        "mean_test_top1": {"teacher": teacher_test, "alone": alone, "distilled": mean([run["distilled"]["test_top1"] for run in runs])},
        "mean_test_gain_points": round(statistics.mean(gains), 2),
        "stdev_test_gain_points": round(statistics.stdev(gains), 2) if len(gains) > 1 else None,
        "mean_val_gain_points": round(statistics.mean(run["val_gain_points"] for run in runs), 2),
        "runs_with_gain": f"{sum(gain > 0 for gain in gains)} of {len(gains)}",
        "teacher_beats_alone_by_points": round(100 * (teacher_test - alone), 2),
        # distillation can at best close the teacher-student gap: the gain is bounded by it
        "share_of_gap_closed": round(statistics.mean(gains) / (100 * (teacher_test - alone)), 2) if teacher_test > alone else None,
        "target": "distilled >= alone + 1 point on average over the runs (test top-1)",
        "met": statistics.mean(gains) >= 1.0,
        "seconds": round(time.time() - started, 1),
    }


def kd_gain_on_draw(work: Path, draw: int, seeds: tuple[int, ...]) -> dict:
    from edgecls.distill import DistillConfig, distill
    from edgecls.train import TrainConfig, train

    data, test = write_digit_folders(work, draw=draw, test=KD_TEST, per_class_train=KD_PER_CLASS_TRAIN, per_class_val=KD_PER_CLASS_VAL)
    teacher = train(TrainConfig(data=str(data), model="cnn", img_size=KD_SIZE, channels="gray", augment="none", epochs=KD_EPOCHS,
                                batch_size=KD_BATCH, learning_rate=KD_LR, patience=0, seed=0, out=str(work / "teacher")))
    labels = tuple(teacher.class_names)
    entry = {"draw": draw, "teacher": {"val_top1": round(teacher.val_accuracy, 4), "test_top1": test_top1(teacher.model_path, test, KD_SIZE, labels)}, "runs": []}
    log.info("draw %d teacher: %s", draw, entry["teacher"])
    for seed in seeds:
        student = tiny_student(work / f"tiny-{seed}.keras", seed=seed, size=KD_SIZE, labels=labels)
        result = distill(DistillConfig(
            teacher=str(teacher.model_path), student=str(student), data=str(data), temperature=KD_TEMPERATURE, kd_weight=KD_WEIGHT,
            epochs=KD_EPOCHS, batch_size=KD_BATCH, learning_rate=KD_LR, patience=0, augment="none", baseline=True, seed=seed,
            out=str(work / f"distill-{seed}"),
        ))
        run = {
            "seed": seed,
            "alone": {"val_top1": round(result.baseline_top1, 4), "test_top1": test_top1(result.baseline_model_path, test, KD_SIZE, labels)},
            "distilled": {"val_top1": round(result.student_top1, 4), "test_top1": test_top1(result.model_path, test, KD_SIZE, labels)},
        }
        run["test_gain_points"] = round(100 * (run["distilled"]["test_top1"] - run["alone"]["test_top1"]), 2)
        run["val_gain_points"] = round(100 * (run["distilled"]["val_top1"] - run["alone"]["val_top1"]), 2)
        entry["runs"].append(run)
        entry["params_macs"] = {"teacher": [result.teacher_params, result.teacher_macs], "student": [result.student_params, result.student_macs]}
        log.info("draw %d seed %d: alone %s, distilled %s", draw, seed, run["alone"], run["distilled"])
    return entry


def prune_recovery(work: Path) -> dict:
    from edgecls.distill import DistillConfig, distill
    from edgecls.train import TrainConfig, train

    try:
        from edgecls.prune import PruneConfig, prune
    except ImportError as exc:  # the prune stage is another issue; this part runs once it exists
        return {"skipped": f"edgecls.prune is not available ({exc})"}
    started = time.time()
    data, test = write_digit_folders(work / "pr", draw=PR_DRAW, test=PR_TEST, per_class_train=None, per_class_val=None, val_fraction=PR_VAL_FRACTION)
    trained = train(TrainConfig(data=str(data), model="cnn", channels="gray", augment="none", epochs=PR_TRAIN_EPOCHS, seed=0, out=str(work / "pr-teacher")))
    labels, size = tuple(trained.class_names), 32
    pruned = prune(trained.model_path, PruneConfig(ratio=PR_RATIO, data=str(data), measure_tflite=False, out=str(work / "pr-pruned.keras")))
    result = distill(DistillConfig(
        teacher=str(trained.model_path), student=pruned.model_path, data=str(data), epochs=PR_EPOCHS, batch_size=PR_BATCH, learning_rate=PR_LR,
        temperature=PR_TEMPERATURE, kd_weight=PR_KD_WEIGHT,
        patience=0, augment="none", baseline=True, seed=0, out=str(work / "pr-distill"),
    ))
    figures = {
        "unpruned": {"val_top1": round(result.teacher_top1, 4), "test_top1": test_top1(trained.model_path, test, size, labels)},
        "pruned_before_recovery": {"val_top1": round(pruned.top1_after, 4), "test_top1": test_top1(pruned.model_path, test, size, labels)},
        "finetuned_alone": {"val_top1": round(result.baseline_top1, 4), "test_top1": test_top1(result.baseline_model_path, test, size, labels)},
        "distilled": {"val_top1": round(result.student_top1, 4), "test_top1": test_top1(result.model_path, test, size, labels)},
    }
    gap_test = round(100 * (figures["unpruned"]["test_top1"] - figures["distilled"]["test_top1"]), 2)
    gap_val = round(100 * (figures["unpruned"]["val_top1"] - figures["distilled"]["val_top1"]), 2)
    return {
        "task": f"digits cnn 32x32 gray (train defaults, {PR_TRAIN_EPOCHS} epochs max), {PR_TEST} test images held out (draw {PR_DRAW})",
        "n_train": result.n_train, "n_val": result.n_val, "n_test": PR_TEST,
        "prune": {"ratio": PR_RATIO, "method": "channels", "criterion": "l1", "params_before": pruned.params_before, "params_after": pruned.params_after,
                  "macs_before": pruned.macs_before, "macs_after": pruned.macs_after},
        "recovery": {"epochs": PR_EPOCHS, "batch_size": PR_BATCH, "learning_rate": PR_LR, "temperature": PR_TEMPERATURE, "kd_weight": PR_KD_WEIGHT, "best_epoch_by": "val top-1"},
        "top1": figures,
        "gap_points": {"test": gap_test, "val": gap_val},
        "target": "distilled within 0.5 points of the unpruned top-1 (test; val is the split the best epoch was chosen on)",
        "met": gap_test <= 0.5,
        "seconds": round(time.time() - started, 1),
    }


def main() -> None:
    global PR_DRAW
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", default=",".join(map(str, DRAWS)), help="comma list of image draws (seeds of the train/val/test split)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma list of training seeds, run on every draw")
    parser.add_argument("--part", choices=("all", "kd", "prune"), default="all")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    draws, seeds = (tuple(int(x) for x in text.split(",") if x.strip()) for text in (args.draws, args.seeds))
    if len(draws) * len(seeds) < 3:
        parser.error("at least 3 runs (draws x seeds) are needed for an average")
    PR_DRAW = draws[0]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    import keras
    import tensorflow as tf

    started = time.time()
    previous = json.loads(args.results.read_text()) if args.results.exists() else {}
    report = {
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "tensorflow": tf.__version__, "keras": keras.__version__,
                 "where": "Keras top-1 on this host's CPU; no latency figures here"},
        "protocol": " ".join(__doc__.split("Protocol: ", 1)[1].split("\n\nRun:", 1)[0].split()),
    }
    with tempfile.TemporaryDirectory(prefix="edgecls-bench-distill-") as scratch:
        work = Path(scratch)
        report["kd_gain"] = kd_gain(work, draws, seeds) if args.part in ("all", "kd") else previous.get("kd_gain")
        report["prune_recovery"] = prune_recovery(work) if args.part in ("all", "prune") else previous.get("prune_recovery")
    report["seconds"] = round(time.time() - started, 1)
    from edgecls.fileio import write_json

    write_json(args.results, report)
    summary = {"kd_gain": {k: report["kd_gain"].get(k) for k in ("mean_test_top1", "mean_test_gain_points", "runs_with_gain", "met")} if report["kd_gain"] else None,
               "prune_recovery": {k: report["prune_recovery"].get(k) for k in ("top1", "gap_points", "met")} if report["prune_recovery"] else None}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
