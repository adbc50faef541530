"""Do the keras.applications backbones learn from scratch on a small real-photo set? (issue 15)

Writes ``benchmarks/results/backbones.json``: for every registry backbone
trained from scratch (``weights=None``) and for ``cnn``, the validation top-1,
the epochs, the BatchNorm momentum and the wall time, on a class-folder set cut
from photographs shipped in scikit-image / scikit-learn
(``benchmarks/photoset.py``: validation patches from another region of each
photo than the training patches, so validation is not the training pixels).

Protocol: img 64, batch 64, Adam 1e-3 with cosine decay (``edgecls.train.fit``,
the trainer's own loop), no augmentation, no early stopping, best epoch by
validation accuracy (what ``edgecls train`` keeps), seed 0. Each backbone runs
with the BatchNorm momentum of ``edgecls.models.bn_momentum_for(steps)``;
``--keras-momentum`` adds a run with the momentum Keras builds (0.999 for the
MobileNets and ResNet50), the failure of issue 15. Target: each backbone
within 5 points of ``cnn``.

    nice -n 5 python benchmarks/backbones.py --set textures4 --epochs 15
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
from photoset import SETS, make_photoset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "backbones.json"
IMAGE_SIZE = 64
BATCH_SIZE = 64
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


def train_one(spec: str, dataset, *, epochs: int, momentum: str, seed: int = 0) -> dict:
    """Train ``spec`` (``name`` or ``name@alpha``) from scratch; its top-1 and timings."""
    import keras

    from edgecls.models import bn_momentum_for, build_model
    from edgecls.train import FitOptions, fit

    name, _, alpha = spec.partition("@")
    steps = int(np.ceil(len(dataset.train) / BATCH_SIZE)) * epochs
    options = {"alpha": float(alpha)} if alpha else {}
    bn_momentum = bn_momentum_for(steps) if momentum == "rule" else None
    keras.utils.set_random_seed(seed)
    model = build_model(
        name,
        num_classes=dataset.num_classes,
        image_size=(IMAGE_SIZE, IMAGE_SIZE),
        channels=3,
        bn_momentum=bn_momentum,
        **options,
    )
    used = sorted(
        {round(layer.momentum, 4) for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    )
    started = time.perf_counter()
    history = fit(model, dataset, FitOptions(epochs=epochs, batch_size=BATCH_SIZE, seed=seed))
    seconds = time.perf_counter() - started
    best = int(np.argmax(history["val_accuracy"]))
    return {
        "model": spec,
        "bn_momentum": used,
        "momentum_source": momentum,
        "epochs": epochs,
        "steps": steps,
        "params": int(model.count_params()),
        "val_top1": round(float(history["val_accuracy"][best]), 4),
        "best_epoch": best + 1,
        "val_top1_last": round(float(history["val_accuracy"][-1]), 4),
        "train_accuracy_last": round(float(history["accuracy"][-1]), 4),
        "wall_s": round(seconds, 1),
    }


def main(argv=None) -> None:
    from edgecls.base.fileio import write_json
    from edgecls.data import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETS), default="textures4")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--train", type=int, default=150, help="training patches per class")
    parser.add_argument("--val", type=int, default=50, help="validation patches per class")
    parser.add_argument("--models", default=",".join(BACKBONES))
    parser.add_argument(
        "--keras-momentum",
        default="mobilenetv2@0.35,mobilenetv3small",
        help="models also run with Keras' own BatchNorm momentum (comma list; empty: none)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    runs = [(spec, "rule") for spec in args.models.split(",")]
    runs += [(spec, "keras") for spec in args.keras_momentum.split(",") if spec]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_photoset(
            Path(tmp) / args.set,
            SETS[args.set],
            train_per_class=args.train,
            val_per_class=args.val,
            patch_size=IMAGE_SIZE,
            seed=0,
        )
        dataset = load_dataset(str(root), image_size=(IMAGE_SIZE, IMAGE_SIZE), channel_order="RGB")
        for spec, momentum in runs:
            result = train_one(spec, dataset, epochs=args.epochs, momentum=momentum)
            results.append(result)
            print(
                f"{spec:18s} bn {result['bn_momentum']} ({momentum}): val top-1 {result['val_top1']:.3f} (epoch "
                f"{result['best_epoch']}, last {result['val_top1_last']:.3f}, train "
                f"{result['train_accuracy_last']:.3f}) {result['wall_s']:.0f} s",
                flush=True,
            )
            cnn = next((r["val_top1"] for r in results if r["model"] == "cnn"), None)
            write_json(
                args.out,
                {
                    "set": args.set,
                    "classes": list(SETS[args.set]),
                    "train_per_class": args.train,
                    "val_per_class": args.val,
                    "image_size": IMAGE_SIZE,
                    "batch_size": BATCH_SIZE,
                    "chance": round(1.0 / len(SETS[args.set]), 4),
                    "cnn_val_top1": cnn,
                    "host": f"{platform.machine()} {platform.processor() or ''}".strip(),
                    "runs": results,
                },
            )


if __name__ == "__main__":
    main()
