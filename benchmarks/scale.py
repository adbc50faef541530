"""Training past memory: peak RSS and epoch time of ``--cache disk`` against ``--cache memory``.

Generates folders of JPEGs (random square patches of the ten photographs of
``benchmarks/photoset.py``'s ``photos10``, one class per photo, written by
``cv2.imwrite``), trains one epoch of ``cnn`` on each in a fresh subprocess and
records that process's peak RSS (``resource.getrusage``), the epoch's own time
(a callback: decoding the cache is not in it) and the disk cache's size.

The issue's setting is 20,000 and 40,000 images at 224x224 (``--counts 20000
40000 --size 224``); ``--memory-count`` is the folder also trained with
``--cache memory`` (it must fit in RAM). On a small shared machine, pass
smaller ``--counts``/``--size``: the JSON records what was run.

    nice -n 5 python benchmarks/scale.py --counts 20000 40000 --size 224 --memory-count 20000 \\
        --model mobilenetv2 --alpha 0.35
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"


def make_folder(root: Path, count: int, size: int, *, seed: int = 0) -> Path:
    """``count`` JPEGs of ``size`` + 16 px, spread over the ten photos, under ``root/<photo>/``."""
    import cv2
    from photoset import PHOTOS10, load_photo

    rng = np.random.default_rng(seed)
    photos = {name: cv2.cvtColor(load_photo(name), cv2.COLOR_RGB2BGR) for name in PHOTOS10}
    side_out = size + 16
    for index in range(count):
        name = PHOTOS10[index % len(PHOTOS10)]
        photo = photos[name]
        height, width = photo.shape[:2]
        side = int(rng.integers(min(height, width) // 4, min(height, width) // 2))
        top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
        patch = cv2.resize(photo[top : top + side, left : left + side], (side_out, side_out))
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{index:06d}.jpg"), patch, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return root


def child(data: str, out: str, cache: str, size: int, model: str, alpha: float, batch: int, report: str) -> None:
    """One training run (inside the measured subprocess)."""
    import keras

    from edgecls.data.cache import cache_bytes
    from edgecls.train import TrainConfig, train

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.started

    timer = EpochTimer()
    started = time.perf_counter()
    config = TrainConfig(
        data=data,
        model=model,
        alpha=alpha,
        img_size=size,
        epochs=1,
        batch_size=batch,
        patience=0,
        out=out,
        cache=cache,
        augment="none",
        weights="none",
    )
    result = train(config, callbacks=[timer])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    document = {
        "cache": cache,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "epoch_s": round(timer.seconds, 2),
        "total_s": round(time.perf_counter() - started, 2),
        "cache_bytes": cache_bytes(Path(out) / "cache"),
        "val_accuracy": round(result.val_accuracy, 4),
    }
    Path(report).write_text(json.dumps(document))


def measure(data: Path, cache: str, size: int, model: str, alpha: float, batch: int, work: Path) -> dict:
    report = work / f"{data.name}-{cache}.json"
    command = [sys.executable, __file__, "--child", str(data), str(work / f"run-{data.name}-{cache}"), cache]
    command += [str(size), model, str(alpha), str(batch), str(report)]
    subprocess.run(command, check=True)
    return json.loads(report.read_text())


def floor(size: int, model: str, alpha: float, batch: int) -> dict:
    """Peak RSS of the same model's training steps on random batches, no data set: what any cache mode adds to."""
    code = (
        "import os, resource, numpy as np\n"
        "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')\n"
        "from edgecls.models import build_model\n"
        "from edgecls.train import make_optimizer\n"
        f"m = build_model({model!r}, num_classes=10, image_size=({size}, {size}), channels=3, alpha={alpha}, "
        "weights=None)\n"
        "m.compile(make_optimizer(1e-3, 100), 'sparse_categorical_crossentropy', metrics=['accuracy'])\n"
        f"x = np.random.default_rng(0).integers(0, 256, ({batch}, {size}, {size}, 3)).astype('float32')\n"
        f"y = np.arange({batch}) % 10\n"
        "for _ in range(3): m.train_on_batch(x, y)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return {
        "what": "3 train steps on random batches, no data set",
        "peak_rss_mb": round(float(done.stdout.split()[-1]), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[20000, 40000])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--memory-count", type=int, default=None, help="also train this folder in memory")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--alpha", type=float, default=1.0, help="width of a MobileNet (0.35: the smallest)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--work", type=Path, default=None, help="where folders and runs go (default: a temp dir)")
    parser.add_argument("--note", default="", help="recorded in the JSON (e.g. why the setting was scaled down)")
    parser.add_argument("--child", nargs=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        data, out, cache, size, model, alpha, batch, report = args.child
        child(data, out, cache, int(size), model, float(alpha), int(batch), report)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="edgecls-scale-"))
    model_floor = floor(args.size, args.model, args.alpha, args.batch_size)
    print(f"the training step alone: {model_floor}", flush=True)
    runs = []
    for count in args.counts:
        started = time.perf_counter()
        folder = make_folder(work / f"photos{count}", count, args.size)
        print(f"{count} JPEGs in {time.perf_counter() - started:.0f} s", flush=True)
        caches = ["disk"] + (["memory"] if count == args.memory_count else [])
        for cache in caches:
            row = {
                "images": count,
                "size": args.size,
                "model": args.model,
                "alpha": args.alpha,
                "batch_size": args.batch_size,
                **measure(folder, cache, args.size, args.model, args.alpha, args.batch_size, work),
            }
            print(row, flush=True)
            runs.append(row)
    pixels = {count: count * args.size * args.size * 3 / 2**20 for count in args.counts}
    disk = {row["images"]: row for row in runs if row["cache"] == "disk"}
    memory = {row["images"]: row for row in runs if row["cache"] == "memory"}
    low, high = min(disk), max(disk)
    checks = {
        f"peak_rss_below_pixels_at_{low}": disk[low]["peak_rss_mb"] < pixels[low],
        f"rss_growth_{low}_to_{high}": round(disk[high]["peak_rss_mb"] / disk[low]["peak_rss_mb"] - 1, 4),
    }
    for count, row in memory.items():
        checks[f"disk_over_memory_epoch_at_{count}"] = round(disk[count]["epoch_s"] / row["epoch_s"], 3)
    document = {
        "what": "one epoch of edgecls train --cache disk|memory on generated photo-patch JPEGs (photos10)",
        "pixels_mb": {str(k): round(v, 1) for k, v in pixels.items()},
        "note": args.note,
        "host": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
        "training_step_floor": model_floor,
        "runs": runs,
        "checks": checks,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(checks, indent=2))


if __name__ == "__main__":
    main()
