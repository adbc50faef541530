"""The deployment loop end to end with the real commands: drift, collect, label, retrain with replay, A/B.

Domain A: ``textures4`` from ``benchmarks/photoset.py`` (64 px patches). Domain B:
the same four textures seen by a noisier, softer camera — every frame goes
through ``edgecls.runtime.corruptions``: ``shot_noise`` at severity 2 (25 photons
at full scale: a small sensor in a dim room), then ``defocus_blur`` at severity 1,
each with the frame's own seed. B's stream (1200 frames) is cut from the photos'
training region with another seed, B's held-out set (200 frames) from their
validation region. (Heavier shifts — ``low_light`` 2 or more — leave this model
at chance *and confident*: a collector that keys on doubt then keeps nothing.)

1. ``edgecls train --data A`` (cnn, 32 px) and ``edgecls export --format tflite``;
2. the FP32 TFLite runs in ``Classifier(..., collect=Collector(below=0.9, margin=0.2))``
   over B's stream (``every_s=0``: frames come from disk here, not at a camera's pace);
3. the kept frames are labelled from ground truth into ``<label>/`` folders —
   the only simulated step, a person's job on a real deployment;
4. ``edgecls train --init-from A/model.keras --data collected/ --replay A``;
5. ``edgecls evaluate`` of both models on A's val/ and B's held-out set, and
   ``edgecls compare OLD NEW --data B`` (its val/ split, the held-out frames) for the verdict.

    nice -n 5 python benchmarks/loop.py   # ~6 min on two cores -> benchmarks/results/loop.json
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "loop.json"
WORK = ROOT / "runs" / "bench-loop"
SEED = 0
SHIFT = (("shot_noise", 2), ("defocus_blur", 1))  # domain B: what each frame goes through, in order
BELOW, MARGIN = 0.9, 0.2  # the Collector's thresholds: keep a frame whose top score or top-2 margin is under them
# --augment none: the deployed model is then the same bytes each run (augmenting maps run in parallel)
TRAIN_ARGS = ["--model", "cnn", "--img-size", "32", "--epochs", "30", "--augment", "none", "--seed", str(SEED)]
RETRAIN_ARGS = ["--epochs", "15", "--lr", "2e-4", "--replay-fraction", "0.75", "--seed", str(SEED)]


def edgecls(*args: str) -> dict:
    """Run one edgecls command with ``--json``; its parsed output."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "edgecls.cli", *args, "--json"]
    print("$ edgecls", " ".join(args), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"edgecls {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def shifted_folder(source: Path, target: Path, seed: int) -> list[tuple[Path, int]]:
    """``source/<class>/*.png`` through ``SHIFT`` into ``target/<class>/``; (file, label index) of each."""
    import cv2

    from edgecls.runtime.corruptions import corrupt, image_rng

    written = []
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    files = [(path, label) for label, name in enumerate(classes) for path in sorted((source / name).glob("*.png"))]
    for index, (path, label) in enumerate(files):
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        rng = image_rng(seed, index)
        for name, severity in SHIFT:
            frame = corrupt(frame, name, severity, rng)
        out = target / classes[label] / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), frame)
        written.append((out, label))
    return written


def collect(model: Path, stream: list[tuple[Path, int]], folder: Path, labels: list[str]) -> dict:
    """Run ``stream`` through the Classifier with a Collector; label the kept frames into ``folder/<label>/``."""
    import cv2

    from edgecls.runtime import Classifier
    from edgecls.runtime.collect import Collector

    unsure = folder.parent / "unsure"
    shutil.rmtree(unsure, ignore_errors=True)
    collector = Collector(unsure, below=BELOW, margin=MARGIN, max_files=10_000, every_s=0.0)
    classifier = Classifier(model, collect=collector)
    kept, wrong_kept, wrong_seen = [], 0, 0
    for path, label in stream:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        saved_before = collector.saved
        prediction = classifier.predict(frame)
        wrong = prediction[0][0] != labels[label]  # Prediction: [(label, score), ...], best first
        wrong_seen += int(wrong)
        if collector.saved > saved_before:
            kept.append((frame, label))
            wrong_kept += int(wrong)
    for index, (frame, label) in enumerate(kept):  # the labelling: ground truth, the one simulated step
        out = folder / labels[label] / f"frame_{index:05d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), frame)
    return {
        "seen": len(stream),
        "collected": len(kept),
        "collected_share": round(len(kept) / len(stream), 4),
        "collected_wrong_share": round(wrong_kept / max(1, len(kept)), 4),
        "stream_wrong_share": round(wrong_seen / len(stream), 4),
        "wrong_frames_caught": round(wrong_kept / max(1, wrong_seen), 4),
        "collector": {"below": BELOW, "margin": MARGIN, "every_s": 0.0},
    }


def main() -> None:
    from photoset import TEXTURES4, make_photoset

    started = time.time()
    shutil.rmtree(WORK, ignore_errors=True)
    domain_a = make_photoset(WORK / "A", TEXTURES4, train_per_class=150, val_per_class=50, patch_size=64, seed=SEED)
    raw_b = make_photoset(WORK / "B_raw", TEXTURES4, train_per_class=300, val_per_class=50, patch_size=64, seed=1)
    # B/train: the stream the device sees; B/val: held out (compare scores a folder's val/ split)
    stream = shifted_folder(raw_b / "train", WORK / "B" / "train", seed=11)
    shifted_folder(raw_b / "val", WORK / "B" / "val", seed=12)
    held_out_b = WORK / "B" / "val"

    old = edgecls("train", "--data", str(domain_a), "--out", str(WORK / "old"), *TRAIN_ARGS)
    exported = edgecls("export", old["model_path"], "--format", "tflite")
    tflite = next(Path(a["path"]) for a in exported["artifacts"] if str(a["path"]).endswith(".tflite"))
    labels = list(old["class_names"])
    collected = collect(tflite, stream, WORK / "collected", labels)
    print(json.dumps(collected), flush=True)

    new = edgecls(
        "train",
        "--init-from",
        old["model_path"],
        "--data",
        str(WORK / "collected"),
        "--replay",
        str(domain_a),
        "--out",
        str(WORK / "new"),
        *RETRAIN_ARGS,
    )
    scores = {}
    for name, model in (("old", old["model_path"]), ("new", new["model_path"])):
        scores[name] = {
            "A_val_top1": edgecls("evaluate", model, "--data", str(domain_a / "val"))["top1"],
            "B_heldout_top1": edgecls("evaluate", model, "--data", str(held_out_b))["top1"],
        }
    verdict_b = edgecls("compare", old["model_path"], new["model_path"], "--data", str(WORK / "B"))
    verdict_a = edgecls("compare", old["model_path"], new["model_path"], "--data", str(domain_a))
    rise_b = 100 * (scores["new"]["B_heldout_top1"] - scores["old"]["B_heldout_top1"])
    drop_a = 100 * (scores["old"]["A_val_top1"] - scores["new"]["A_val_top1"])
    report = {
        "benchmark": "loop",
        "domain_a": "textures4 (benchmarks/photoset.py, 150 train / 50 val patches per class, 64 px, seed 0)",
        "domain_b": "the same textures (patch seed 1) through runtime.corruptions shot_noise 2 then defocus_blur 1",
        "collection": collected,
        "retrain": {
            "n_new_train": new["validation"]["n_new_train"],
            "n_replay": new["validation"]["n_replay"],
            "validation": new["validation"],
            "args": RETRAIN_ARGS,
        },
        "top1": scores,
        "summary": {
            "B_heldout_rise_points": round(rise_b, 2),
            "A_val_drop_points": round(drop_a, 2),
            "A_drop_within_1_point": bool(drop_a <= 1.0),
            "compare_on_B": {k: verdict_b[k] for k in ("verdict", "mcnemar_p", "a", "b")},
            "compare_on_A": {k: verdict_a[k] for k in ("verdict", "mcnemar_p")},
        },
        "commands": "edgecls train / export / evaluate / compare via python -m edgecls.cli (see benchmarks/loop.py)",
        "host": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
        "seconds": round(time.time() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
