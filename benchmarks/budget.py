"""The from-scratch training budget (issue 40): epochs against optimiser steps, chosen on one set, checked on another.

``choose``: on photos10 (80 training patches a class, 64 px, ``benchmarks/photoset.py``), each backbone trained from
scratch by ``edgecls.train.train`` with ``weights="none"``, seed 0, and the row's ``epochs`` and ``patience`` (the
budget screened; everything else at the library's defaults). Top-1 is scored on the photos' other region (100
patches a class, never seen in training or validation); the run itself validates on a held-out split of its
training patches, as ``edgecls train --data FOLDER`` does.

``check``: the defaults as a user runs them, ``edgecls train --data SET --model M --weights none --img-size 64``,
on photos6 (150 training patches a class of six photographs no default was chosen on; the run validates on the
set's ``val/``, the other region). Figure: every backbone at 90 % or more wherever ``cnn`` is at 99 % or more.

    nice python benchmarks/budget.py choose mobilenetv3small --epochs 154 --patience 40
    nice python benchmarks/budget.py check cnn,mobilenetv2,mobilenetv3small,efficientnetb0

Rows are appended to ``benchmarks/results/budget.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from photoset import SETS, make_photoset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "budget.json"
PATCHES = {"photos10": (80, 100), "photos6": (150, 100)}


def data_set(work: Path, name: str) -> Path:
    root = work / name
    if not (root / "val").is_dir():
        train, test = PATCHES[name]
        make_photoset(root, SETS[name], train_per_class=train, val_per_class=test, patch_size=64, seed=0)
    return root


def choose(work: Path, model: str, epochs: int | None, patience: int | None, alpha: float, seed: int) -> dict:
    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.data.folders import load_images
    from edgecls.evaluate import top1_accuracy
    from edgecls.train import TrainConfig, train

    data = data_set(work, "photos10")
    out = work / "runs" / f"{model}-{alpha:g}-e{epochs}-p{patience}-s{seed}"
    started = time.time()
    result = train(
        TrainConfig(data=str(data / "train"), model=model, img_size=64, weights="none", seed=seed, out=str(out),
                    epochs=epochs, patience=patience, alpha=alpha)
    )  # fmt: skip
    test, _, _ = load_images(data / "val", image_size=(64, 64), channel_order="RGB")
    return {
        "kind": "choose", "set": "photos10", "model": model, "alpha": alpha, "epochs": epochs, "patience": patience,
        "seed": seed, "heldout_top1": round(result.val_accuracy, 4),
        "test_top1": round(top1_accuracy(load_keras_model(result.model_path), test), 4),
        "epochs_run": result.phase_epochs, "seconds": round(time.time() - started),
    }  # fmt: skip


def check(work: Path, model: str, seed: int) -> dict:
    """``edgecls train`` as a user types it, through the installed console script; its JSON result."""
    import subprocess

    data = data_set(work, "photos6")
    out = work / "runs" / f"check-{model}-s{seed}"
    edgecls = str(Path(sys.executable).with_name("edgecls"))  # the console script of the Python running this
    command = [edgecls, "train", "--data", str(data), "--model", model, "--weights", "none", "--img-size", "64",
               "--seed", str(seed), "--out", str(out), "--json"]  # fmt: skip
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    return {
        "kind": "check", "set": "photos6", "model": model, "seed": seed, "command": " ".join(command),
        "val_top1": round(result["val_accuracy"], 4), "epochs_run": result.get("phase_epochs"),
        "seconds": round(time.time() - started),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("choose", "check"))
    parser.add_argument("models")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-budget"))
    args = parser.parse_args()
    document = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"protocol": __doc__, "rows": []}
    for model in args.models.split(","):
        if args.kind == "choose":
            row = choose(args.work, model, args.epochs, args.patience, args.alpha, args.seed)
        else:
            row = check(args.work, model, args.seed)
        row["host"] = f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs (seconds are not timings)"
        document["rows"].append(row)
        RESULTS.write_text(json.dumps(document, indent=1) + "\n")
        print(json.dumps(row))


if __name__ == "__main__":
    main()
