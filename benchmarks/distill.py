"""Benchmark of ``edgecls distill`` (issue 5): what does distillation buy, measured honestly?

Writes ``benchmarks/results/distill.json`` with two experiments, both through
the public ``edgecls.train.train`` / ``edgecls.prune.prune`` /
``edgecls.distill.distill`` functions, on the built-in digits (1,797 8x8
images) written out as PNG folders so that a **test split is held out** from
everything that is selected on:

1. ``kd_gain``: the case distillation is for. A large model exists, trained
   on plenty of labelled images; the edge team has a small labelled set of
   its own and wants a tiny model. Per draw of the images: 700 test images
   never used for any choice; the student's set, 15 training images per class
   (150) and 20 validation images per class (200: best epoch); the teacher's
   pool, the other 747 images, disjoint from both. Teacher: the registry
   ``cnn`` (111 k parameters) at 16x16 gray, trained by ``edgecls.train`` on
   its pool (its own 80/20 split). Student: a 3.9 k-parameter CNN (conv 8 →
   conv 16 → dense) written to a ``.keras`` file per seed. For each draw and
   seed, the same student file is trained alone (``--baseline``) and
   distilled (T 4, kd-weight 0.9: the CLI defaults) on the student's 150
   images, with the same data, epochs, schedule and seed; every run's
   validation and test top-1 are kept. Target: distilled ≥ alone + 1 point
   on average (test).
2. ``prune_recovery``: the digits ``cnn`` (32x32 gray, 20 epochs) pruned at
   ratio 0.5 by ``edgecls prune`` (structured channels, L1), then distilled
   from its unpruned self (T 2, kd-weight 0.5); also fine-tuned alone for the
   same epochs. 500 test images held out, on each draw. Target: distilled
   within 0.5 points of the unpruned top-1, on average over the draws.

Protocol: the student's settings (learning rate 5e-3, batch 16, 40 epochs,
width 8, 15 images per class; recovery 20 epochs at batch 32) were chosen in
pilot runs on draw 123, which looked at its validation and test figures.
Earlier versions of part 1 trained the teacher on the student's own 150
images. There the teacher beat the student alone by only 1.5 points, and
distillation gained +0.37 points on draw 7 (seeds 11-15) and +0.55 on draws
1001-1003 (seeds 21, 22; per run +0.28, +0.14, +0.43, +1.28, -0.42, +1.57):
soft targets from a teacher that knows no more than the labels add little.
The present design (teacher trained on its own, larger pool) was piloted on
draw 123's validation split only (seeds 1-3: +2.33 points) with the
settings above unchanged, then run once on draws never looked at before
(2001-2003, seeds 31 and 32): +1.95 points. The recovery got more steps
and T 2 / kd-weight 0.5, which beat T 4 / 0.9 on draw 123's validation
split (gap 0.77 vs 1.15 points). It ran on one draw until a run on draw
2001 measured a 1.0-point test gap with both models at 100 % validation
top-1: the best epoch was then the first to reach 100 %. Since then ``fit``
breaks accuracy ties by the lower validation loss (a rule chosen for that
reason, not tuned on any figure), the recovery is averaged over the same
three draws, and the whole script was run once more with that rule on
draws 2001-2003 (part 1 moved from +1.95 to
+2.31 points with the rule, through other best epochs). Because the
target asks for at least 3 training seeds, not 2 seeds on 3 draws, a third
seed (33) was then added on the same draws, with nothing else changed, and
part 1 run once more: those are the figures below. Per draw the recovery
gaps are kept; one draw alone can miss 0.5 points. All figures are
Keras top-1 on this host's CPU.

Run: ``.venv/bin/python benchmarks/distill.py [--draws 2001,2002,2003] [--seeds 31,32,33]`` (or ``make bench``);
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
DRAWS = (2001, 2002, 2003)  # draws of the images; the pilots used 123, earlier designs 7 and 1001-1003 (see Protocol)
SEEDS = (31, 32, 33)  # per draw; the pilots used 1-5, earlier designs 11-15 and 21-22

log = logging.getLogger("benchmarks.distill")

# part 1: small data, tiny student
KD_SIZE, KD_PER_CLASS_TRAIN, KD_PER_CLASS_VAL, KD_TEST = 16, 15, 20, 700
TEACHER_EPOCHS, TEACHER_BATCH = 30, 32
KD_EPOCHS, KD_BATCH, KD_LR, KD_TEMPERATURE, KD_WEIGHT, STUDENT_WIDTH = 40, 16, 5e-3, 4.0, 0.9, 8
# part 2: the digits cnn, pruned, then distilled from itself
PR_TEST, PR_VAL_FRACTION, PR_TRAIN_EPOCHS, PR_RATIO = 500, 0.2, 20, 0.5
PR_TASK = f"digits cnn 32x32 gray (train defaults, {PR_TRAIN_EPOCHS} epochs max), {PR_TEST} test images held out"
BEST_EPOCH_BY = "val top-1, ties: the lower val loss"  # as edgecls.train.fit keeps it
PR_EPOCHS, PR_BATCH, PR_LR, PR_TEMPERATURE, PR_KD_WEIGHT = 20, 32, 1e-3, 2.0, 0.5


def write_digit_folders(
    root: Path,
    *,
    draw: int,
    test: int,
    per_class_train: int | None,
    per_class_val: int | None,
    val_fraction: float = 0.2,
) -> tuple[Path, Path]:
    """``root/data/{train,val}/<digit>/*.png`` and ``root/test/<digit>/*.png`` (8x8 gray, as sklearn ships them).

    The test images are drawn first (``draw`` seeds the draw), stratified; train and val come from the rest.
    """
    images, labels = digit_images()
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
        write_pngs(root / "test" if part == "test" else root / "data" / part, indices, images, labels)
    return root / "data", root / "test"


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as 8x8 uint8 gray images (0..255) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.round(digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target


def write_pngs(folder: Path, indices, images: np.ndarray, labels: np.ndarray) -> None:
    """``folder/<label>/<index>.png`` for each index."""
    from edgecls.data import write_class_folders

    indices = np.asarray(list(indices), dtype=np.int64)
    write_class_folders(folder, images[indices], labels[indices], stems=[f"{index:04d}" for index in indices])


def write_kd_folders(root: Path, *, draw: int) -> tuple[Path, Path, Path]:
    """``root/student/{train,val}/<digit>/``, ``root/teacher/<digit>/`` and ``root/test/<digit>/``: disjoint,
    stratified.

    Per class, in the order drawn: the test images, the student's val and train images, then the teacher's pool
    (the rest).
    """
    images, labels = digit_images()
    rng = np.random.default_rng(draw)
    folders = {
        "test": root / "test",
        "val": root / "student" / "val",
        "train": root / "student" / "train",
        "teacher": root / "teacher",
    }
    sizes = {"test": KD_TEST // 10, "val": KD_PER_CLASS_VAL, "train": KD_PER_CLASS_TRAIN}
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        start = 0
        for part, folder in folders.items():
            chosen = members[start:] if part == "teacher" else members[start : start + sizes[part]]
            start += len(chosen)
            write_pngs(folder, chosen, images, labels)
    return root / "teacher", root / "student", root / "test"


def tiny_student(path: Path, *, seed: int, size: int, labels: tuple[str, ...]) -> Path:
    """conv 8 → conv 16 → flatten → logits → softmax: an edge-sized CNN with the edgecls head contract."""
    import keras
    from keras import layers

    from edgecls.adapters.keras_io import save_keras_model
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
    info = ModelInfo(
        labels,
        (size, size),
        1,
        "GRAY",
        provenance={"source_model": f"tinycnn width {STUDENT_WIDTH} (benchmarks/distill.py), random init seed {seed}"},
    )
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
        "task": (
            f"digits at {KD_SIZE}x{KD_SIZE} gray; the student has {KD_PER_CLASS_TRAIN} train + {KD_PER_CLASS_VAL} val "
            f"images per class, the teacher was trained on a disjoint pool of the other images; {KD_TEST} test images "
            f"held out; {len(draws)} independent draws of the images x {len(seeds)} seeds"
        ),
        "teacher_model": f"cnn (registry), trained by edgecls.train on each draw's teacher pool ({TEACHER_EPOCHS} "
        f"epochs, batch {TEACHER_BATCH}, its own 80/20 split)",
        "student_model": f"tinycnn width {STUDENT_WIDTH} (.keras with the edgecls head, fresh random init per draw and "
        "seed)",
        "params_macs": per_draw[0]["params_macs"],
        "settings": {
            "epochs": KD_EPOCHS,
            "batch_size": KD_BATCH,
            "learning_rate": KD_LR,
            "schedule": "cosine (edgecls.train.make_optimizer)",
            "temperature": KD_TEMPERATURE,
            "kd_weight": KD_WEIGHT,
            "best_epoch_by": BEST_EPOCH_BY,
            "augment": "none",
            "patience": "off",
        },
        "draws": per_draw,
        "mean_test_top1": {
            "teacher": teacher_test,
            "alone": alone,
            "distilled": mean([run["distilled"]["test_top1"] for run in runs]),
        },
        "mean_test_gain_points": round(statistics.mean(gains), 2),
        "stdev_test_gain_points": round(statistics.stdev(gains), 2) if len(gains) > 1 else None,
        "mean_val_gain_points": round(statistics.mean(run["val_gain_points"] for run in runs), 2),
        "runs_with_gain": f"{sum(gain > 0 for gain in gains)} of {len(gains)}",
        "teacher_beats_alone_by_points": round(100 * (teacher_test - alone), 2),
        # distillation can at best close the teacher-student gap: the gain is bounded by it
        "share_of_gap_closed": round(statistics.mean(gains) / (100 * (teacher_test - alone)), 2)
        if teacher_test > alone
        else None,
        "target": "distilled >= alone + 1 point on average over the runs (test top-1)",
        "met": statistics.mean(gains) >= 1.0,
        "seconds": round(time.time() - started, 1),
    }


def kd_gain_on_draw(work: Path, draw: int, seeds: tuple[int, ...]) -> dict:
    from edgecls.distill import DistillConfig, distill
    from edgecls.train import TrainConfig, train

    pool, data, test = write_kd_folders(work, draw=draw)
    teacher = train(
        TrainConfig(
            data=str(pool),
            model="cnn",
            img_size=KD_SIZE,
            channels="gray",
            augment="none",
            epochs=TEACHER_EPOCHS,
            batch_size=TEACHER_BATCH,
            learning_rate=KD_LR,
            patience=0,
            seed=0,
            out=str(work / "teacher"),
        )
    )
    labels = tuple(teacher.class_names)
    entry = {
        "draw": draw,
        "n_teacher_pool": teacher.n_train + teacher.n_val,
        "teacher": {
            "val_top1_own_split": round(teacher.val_accuracy, 4),
            "test_top1": test_top1(teacher.model_path, test, KD_SIZE, labels),
        },
        "runs": [],
    }
    log.info("draw %d teacher: %s", draw, entry["teacher"])
    for seed in seeds:
        student = tiny_student(work / f"tiny-{seed}.keras", seed=seed, size=KD_SIZE, labels=labels)
        result = distill(
            DistillConfig(
                teacher=str(teacher.model_path),
                student=str(student),
                data=str(data),
                temperature=KD_TEMPERATURE,
                kd_weight=KD_WEIGHT,
                epochs=KD_EPOCHS,
                batch_size=KD_BATCH,
                learning_rate=KD_LR,
                patience=0,
                augment="none",
                baseline=True,
                seed=seed,
                out=str(work / f"distill-{seed}"),
            )
        )
        run = {
            "seed": seed,
            "alone": {
                "val_top1": round(result.baseline_top1, 4),
                "test_top1": test_top1(result.baseline_model_path, test, KD_SIZE, labels),
            },
            "distilled": {
                "val_top1": round(result.student_top1, 4),
                "test_top1": test_top1(result.model_path, test, KD_SIZE, labels),
            },
        }
        run["test_gain_points"] = round(100 * (run["distilled"]["test_top1"] - run["alone"]["test_top1"]), 2)
        run["val_gain_points"] = round(100 * (run["distilled"]["val_top1"] - run["alone"]["val_top1"]), 2)
        entry["runs"].append(run)
        entry["params_macs"] = {
            "teacher": [result.teacher_params, result.teacher_macs],
            "student": [result.student_params, result.student_macs],
        }
        log.info("draw %d seed %d: alone %s, distilled %s", draw, seed, run["alone"], run["distilled"])
    return entry


def prune_recovery(work: Path, draws: tuple[int, ...]) -> dict:
    """The recovery on every draw of the images; the target is on the mean test gap."""
    started = time.time()
    per_draw = [prune_recovery_on_draw(work / f"pr-{draw}", draw) for draw in draws]
    if any("skipped" in entry for entry in per_draw):
        return per_draw[0]
    gaps = [entry["gap_points"]["test"] for entry in per_draw]
    mean = lambda key, part: round(statistics.mean(entry["top1"][key][part] for entry in per_draw), 4)  # noqa: E731
    return {
        "task": f"{PR_TASK} on each of {len(draws)} draws",
        "prune": per_draw[0]["prune"],
        "recovery": per_draw[0]["recovery"],
        "draws": per_draw,
        "mean_test_top1": {
            key: mean(key, "test_top1")
            for key in ("unpruned", "pruned_before_recovery", "finetuned_alone", "distilled")
        },
        "mean_gap_points": {
            "test": round(statistics.mean(gaps), 2),
            "val": round(statistics.mean(entry["gap_points"]["val"] for entry in per_draw), 2),
        },
        "target": "distilled within 0.5 points of the unpruned top-1 (mean test gap over the draws)",
        "met": statistics.mean(gaps) <= 0.5,
        "seconds": round(time.time() - started, 1),
    }


def prune_recovery_on_draw(work: Path, draw: int) -> dict:
    from edgecls.distill import DistillConfig, distill
    from edgecls.train import TrainConfig, train

    try:
        from edgecls.prune import PruneConfig, prune
    except ImportError as exc:  # the prune stage is another issue; this part runs once it exists
        return {"skipped": f"edgecls.prune is not available ({exc})"}
    started = time.time()
    data, test = write_digit_folders(
        work / "pr", draw=draw, test=PR_TEST, per_class_train=None, per_class_val=None, val_fraction=PR_VAL_FRACTION
    )
    trained = train(
        TrainConfig(
            data=str(data),
            model="cnn",
            channels="gray",
            augment="none",
            epochs=PR_TRAIN_EPOCHS,
            seed=0,
            out=str(work / "pr-teacher"),
        )
    )
    labels, size = tuple(trained.class_names), 32
    pruned = prune(
        trained.model_path,
        PruneConfig(ratio=PR_RATIO, data=str(data), measure_tflite=False, out=str(work / "pr-pruned.keras")),
    )
    result = distill(
        DistillConfig(
            teacher=str(trained.model_path),
            student=pruned.model_path,
            data=str(data),
            epochs=PR_EPOCHS,
            batch_size=PR_BATCH,
            learning_rate=PR_LR,
            temperature=PR_TEMPERATURE,
            kd_weight=PR_KD_WEIGHT,
            patience=0,
            augment="none",
            baseline=True,
            seed=0,
            out=str(work / "pr-distill"),
        )
    )
    figures = {
        "unpruned": {
            "val_top1": round(result.teacher_top1, 4),
            "test_top1": test_top1(trained.model_path, test, size, labels),
        },
        "pruned_before_recovery": {
            "val_top1": round(pruned.top1_after, 4),
            "test_top1": test_top1(pruned.model_path, test, size, labels),
        },
        "finetuned_alone": {
            "val_top1": round(result.baseline_top1, 4),
            "test_top1": test_top1(result.baseline_model_path, test, size, labels),
        },
        "distilled": {
            "val_top1": round(result.student_top1, 4),
            "test_top1": test_top1(result.model_path, test, size, labels),
        },
    }
    gap_test = round(100 * (figures["unpruned"]["test_top1"] - figures["distilled"]["test_top1"]), 2)
    gap_val = round(100 * (figures["unpruned"]["val_top1"] - figures["distilled"]["val_top1"]), 2)
    return {
        "task": f"{PR_TASK} (draw {draw})",
        "n_train": result.n_train,
        "n_val": result.n_val,
        "n_test": PR_TEST,
        "prune": {
            "ratio": PR_RATIO,
            "method": "channels",
            "criterion": "l1",
            "params_before": pruned.params_before,
            "params_after": pruned.params_after,
            "macs_before": pruned.macs_before,
            "macs_after": pruned.macs_after,
        },
        "recovery": {
            "epochs": PR_EPOCHS,
            "batch_size": PR_BATCH,
            "learning_rate": PR_LR,
            "temperature": PR_TEMPERATURE,
            "kd_weight": PR_KD_WEIGHT,
            "best_epoch_by": BEST_EPOCH_BY,
        },
        "top1": figures,
        "gap_points": {"test": gap_test, "val": gap_val},
        "met": gap_test <= 0.5,
        "seconds": round(time.time() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--draws",
        default=",".join(map(str, DRAWS)),
        help="comma list of image draws (seeds of the train/val/test split)",
    )
    parser.add_argument(
        "--seeds", default=",".join(map(str, SEEDS)), help="comma list of training seeds, run on every draw"
    )
    parser.add_argument("--part", choices=("all", "kd", "prune"), default="all")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    draws, seeds = (tuple(int(x) for x in text.split(",") if x.strip()) for text in (args.draws, args.seeds))
    if len(draws) * len(seeds) < 3:
        parser.error("at least 3 runs (draws x seeds) are needed for an average")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    import keras
    import tensorflow as tf

    started = time.time()
    previous = json.loads(args.results.read_text()) if args.results.exists() else {}
    report = {
        "host": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "where": "Keras top-1 on this host's CPU; no latency figures here",
        },
        "protocol": " ".join(__doc__.split("Protocol: ", 1)[1].split("\n\nRun:", 1)[0].split()),
    }
    with tempfile.TemporaryDirectory(prefix="edgecls-bench-distill-") as scratch:
        work = Path(scratch)
        report["kd_gain"] = kd_gain(work, draws, seeds) if args.part in ("all", "kd") else previous.get("kd_gain")
        report["prune_recovery"] = (
            prune_recovery(work, draws) if args.part in ("all", "prune") else previous.get("prune_recovery")
        )
    report["seconds"] = round(time.time() - started, 1)
    from edgecls.base.fileio import write_json

    write_json(args.results, report)
    summary = {
        "kd_gain": {
            k: report["kd_gain"].get(k) for k in ("mean_test_top1", "mean_test_gain_points", "runs_with_gain", "met")
        }
        if report["kd_gain"]
        else None,
        "prune_recovery": {k: report["prune_recovery"].get(k) for k in ("mean_test_top1", "mean_gap_points", "met")}
        if report["prune_recovery"]
        else None,
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
