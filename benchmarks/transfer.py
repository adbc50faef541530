"""Does pretraining pay? A base pretrained on one real-photo set, fine-tuned on another, small one (issue 15).

Writes ``benchmarks/results/transfer.json``.

Data (``benchmarks/photoset.py``: patches cut from photographs shipped in
scikit-image / scikit-learn; validation patches from another region of each
photo than the training patches):

- **source, ``photos10``**: ten colour photographs (astronaut, chelsea, coffee,
  motorcycle, retina, rocket, Hubble deep field, IHC stain, china, flower),
  ``--source-train`` training patches per class. ``mobilenetv2`` α 0.35 at
  64×64 is trained on it from scratch (``edgecls train --weights none``) and its
  ``model.keras`` is the pretrained base.
- **target, ``textures4``**: brick, grass, gravel, moon: four *other*
  photographs (grayscale textures), with only ``--target-train`` training
  patches per class (a small data set, where pretraining should help) and
  ``--target-val`` held-out patches per class from the right 30 % of each
  photo, which no training patch touches.

Why this is a fair test: no photograph, class or pixel of the target is in the
source, so the pretrained base can only help through features that carry
over (edges, textures, contrast), not by having seen the images. Both arms
are the same network, image size, batch, augmentation, learning rate and
total epochs, trained by ``edgecls.train.train`` itself: *fine-tuned* starts
from the source model's base (``--weights model.keras``; a new head, since the
class count differs) and runs the two phases (``--epochs`` head on the frozen
base, then ``--finetune-epochs`` of the top of the base at a tenth of the rate,
BatchNorm frozen); *scratch* runs ``--weights none`` for the same total number
of epochs with the BatchNorm momentum rule. No early stopping; each arm keeps
its best epoch by validation accuracy, as ``edgecls train`` does (the same
for both arms). Each seed draws its own target patches and its own
initialisation and shuffling; the figures are the mean top-1 over the seeds on
the held-out patches, the gain (fine-tuned − scratch, in points) and its
spread.

    nice -n 5 python benchmarks/transfer.py
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photoset import PHOTOS10, TEXTURES4, make_photoset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "transfer.json"
MODEL, ALPHA, IMAGE_SIZE = "mobilenetv2", 0.35, 64


def run(args: argparse.Namespace) -> dict:
    from edgecls.base.fileio import write_json
    from edgecls.train import TrainConfig, train
    from edgecls.train.runs import environment

    common = dict(model=MODEL, alpha=ALPHA, img_size=IMAGE_SIZE, batch_size=args.batch_size, patience=0, augment="flip")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edgecls-transfer-") as scratch:
        work = Path(scratch)
        source = make_photoset(
            work / "photos10",
            PHOTOS10,
            train_per_class=args.source_train,
            val_per_class=30,
            patch_size=IMAGE_SIZE,
            seed=100,
        )
        pretrain = train(
            TrainConfig(
                data=str(source),
                weights="none",
                epochs=args.source_epochs,
                out=str(work / "pretrain"),
                seed=0,
                **common,
            )
        )
        logging.getLogger("transfer").warning(
            "source: %.1f %% top-1 on photos10 in %.0f s", 100 * pretrain.val_accuracy, pretrain.seconds
        )
        runs = []
        for seed in range(args.seeds):
            target = make_photoset(
                work / f"textures4-{seed}",
                TEXTURES4,
                train_per_class=args.target_train,
                val_per_class=args.target_val,
                patch_size=IMAGE_SIZE,
                seed=seed,
            )
            tuned = train(
                TrainConfig(
                    data=str(target),
                    weights=str(pretrain.model_path),
                    epochs=args.head_epochs,
                    finetune_epochs=args.finetune_epochs,
                    out=str(work / f"tuned-{seed}"),
                    seed=seed,
                    **common,
                )
            )
            fresh = train(
                TrainConfig(
                    data=str(target),
                    weights="none",
                    epochs=args.head_epochs + args.finetune_epochs,
                    out=str(work / f"scratch-{seed}"),
                    seed=seed,
                    **common,
                )
            )
            runs.append(
                {
                    "seed": seed,
                    "fine_tuned_top1": round(tuned.val_accuracy, 4),
                    "scratch_top1": round(fresh.val_accuracy, 4),
                    "gain_points": round(100 * (tuned.val_accuracy - fresh.val_accuracy), 2),
                    "fine_tuned_phase_epochs": tuned.phase_epochs,
                    "fine_tuned_best_epoch": tuned.best_epoch,
                    "scratch_best_epoch": fresh.best_epoch,
                    "fine_tuned_seconds": tuned.seconds,
                    "scratch_seconds": fresh.seconds,
                    "scratch_warnings": fresh.warnings,
                    "fine_tuned_warnings": tuned.warnings,
                }
            )
            logging.getLogger("transfer").warning(
                "seed %d: fine-tuned %.1f %%, scratch %.1f %%", seed, 100 * tuned.val_accuracy, 100 * fresh.val_accuracy
            )
    gains = np.array([r["gain_points"] for r in runs])
    tuned_top1 = np.array([r["fine_tuned_top1"] for r in runs])
    scratch_top1 = np.array([r["scratch_top1"] for r in runs])
    document = {
        "what": "pretrain mobilenetv2 a0.35 on photos10, fine-tune (two phases) on a small textures4 vs the same "
        "network "
        "from scratch with the same total epochs; top-1 on held-out patches",
        "model": MODEL,
        "alpha": ALPHA,
        "image_size": IMAGE_SIZE,
        "batch_size": args.batch_size,
        "augment": "flip",
        "source": {
            "set": "photos10",
            "classes": list(PHOTOS10),
            "train_per_class": args.source_train,
            "val_per_class": 30,
            "epochs": args.source_epochs,
            "top1": round(pretrain.val_accuracy, 4),
            "seconds": pretrain.seconds,
        },
        "target": {
            "set": "textures4",
            "classes": list(TEXTURES4),
            "train_per_class": args.target_train,
            "val_per_class": args.target_val,
        },
        "fine_tuned": {
            "weights": "the source run's model.keras (base; new head)",
            "phase1_epochs": args.head_epochs,
            "phase2_epochs": args.finetune_epochs,
            "unfreeze": "whole base, BatchNorm frozen",
            "mean_top1": round(float(tuned_top1.mean()), 4),
            "std_top1": round(float(tuned_top1.std(ddof=1)), 4),
        },
        "scratch": {
            "weights": "none",
            "epochs": args.head_epochs + args.finetune_epochs,
            "mean_top1": round(float(scratch_top1.mean()), 4),
            "std_top1": round(float(scratch_top1.std(ddof=1)), 4),
        },
        "gain_points": {
            "mean": round(float(gains.mean()), 2),
            "std": round(float(gains.std(ddof=1)), 2),
            "min": round(float(gains.min()), 2),
            "max": round(float(gains.max()), 2),
        },
        "seeds": args.seeds,
        "runs": runs,
        "seconds": round(time.time() - started, 1),
        "host": f"{platform.machine()} ({platform.processor() or 'cpu'}), CPU only",
        "environment": environment(),
    }
    write_json(args.out, document)
    return document


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-train", type=int, default=100, help="photos10 training patches per class")
    parser.add_argument("--source-epochs", type=int, default=15)
    parser.add_argument("--target-train", type=int, default=20, help="textures4 training patches per class")
    parser.add_argument("--target-val", type=int, default=50, help="textures4 held-out patches per class")
    parser.add_argument(
        "--head-epochs", type=int, default=10, help="phase 1 (the scratch arm runs phase 1 + phase 2 epochs)"
    )
    parser.add_argument("--finetune-epochs", type=int, default=10, help="phase 2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    document = run(args)
    print(
        f"fine-tuned {100 * document['fine_tuned']['mean_top1']:.1f} %, "
        f"scratch {100 * document['scratch']['mean_top1']:.1f} %, "
        f"gain {document['gain_points']['mean']:+.1f} ± {document['gain_points']['std']:.1f} points "
        f"({args.seeds} seeds)"
    )


if __name__ == "__main__":
    main()
