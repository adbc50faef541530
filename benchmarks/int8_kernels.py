"""ONNX Runtime's INT8 kernel paths on this CPU: its default, the signed path, and what ``edgecls.runtime`` chose.

For each backbone (``cnn``, MobileNetV2 α 1.0, MobileNetV3-Small) trained briefly on real photo patches
(``benchmarks/photoset.py`` photos10, 64 px), an INT8 Q/DQ ONNX by post-training quantization (the ``cpu``
scheme: 7-bit weights) and one by QAT (full 8-bit weights), each timed in one process, 1 thread, interleaved run
by run (the order rotates each round):

- ``default``: a plain ``onnxruntime.InferenceSession`` (on x86 the unsigned U8S8 kernels);
- ``signed``: the same with ``session.qdqisint8allowed = 1`` (S8S8 kernels);
- ``chosen``: the path ``edgecls.runtime.engines.OnnxEngine`` took as a user gets it (its verdict cache emptied
  first, so the choice is made in this run), timed as the other two are (a plain session on that path), and
  ``runtime``: the engine's own call (``Engine.invoke_raw``, its lock included).

Also the share of validation images where the default and the signed path give the same top-1 (a saturating path
shows as disagreement), and the float ONNX's p50 beside them. The CPU model and its VNNI flags head the JSON.

    python benchmarks/int8_kernels.py [--out benchmarks/results/int8_kernels.json] [--runs 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photoset import PHOTOS10, make_photoset  # noqa: E402

MODELS = (("cnn", {}), ("mobilenetv2", {"alpha": 1.0}), ("mobilenetv3small", {}))


def cpu_record() -> dict:
    from edgecls.runtime.onnx_int8 import VNNI_FLAGS, this_cpu

    cpu = this_cpu()
    return {
        "machine": cpu.machine,
        "model": cpu.model,
        "vnni_flags": sorted(cpu.flags & VNNI_FLAGS),
        "avx512": sorted(flag for flag in cpu.flags if flag.startswith("avx512")),
        "cores": os.cpu_count(),
    }


def build_artifacts(work: Path, data: Path, name: str, options: dict, epochs: int, qat_epochs: int) -> dict:
    from edgecls.export import export
    from edgecls.quantize import QuantizeConfig, quantize
    from edgecls.train import TrainConfig, train

    run = work / name
    trained = train(
        TrainConfig(
            data=str(data / "train"),
            model=name,
            img_size=64,
            epochs=epochs,
            patience=0,
            seed=0,
            out=str(run),
            weights="none" if name != "cnn" else None,
            **options,
        )
    )
    float_onnx = next(a.path for a in export(trained.model_path, formats=("onnx",)).artifacts)
    calib = str(data / "train")
    ptq = quantize(
        trained.model_path, QuantizeConfig(calib=calib, formats=("onnx",), calib_size=100, out=str(run / "ptq"))
    )
    qat = quantize(
        trained.model_path,
        QuantizeConfig(
            calib=calib,
            formats=("onnx",),
            calib_size=100,
            qat=True,
            qat_data=str(data / "train"),
            qat_epochs=qat_epochs,
            out=str(run / "qat"),
        ),
    )
    return {
        "val_top1_float": trained.val_accuracy,
        "float": float_onnx,
        "ptq": ptq.artifacts[0].path,
        "qat": qat.artifacts[0].path,
    }


def session(path: str, signed: bool):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if signed:
        options.add_session_config_entry("session.qdqisint8allowed", "1")
    return onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def session_call(inference_session, frame: np.ndarray):
    feed = {inference_session.get_inputs()[0].name: frame}
    return partial(inference_session.run, None, feed)


def time_interleaved(calls: dict, runs: int, warmup: int = 20) -> dict:
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(runs):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            begun = time.perf_counter()
            calls[name]()
            samples[name].append((time.perf_counter() - begun) * 1000)
    return {
        name: {"p50_ms": round(statistics.median(values), 4), "p90_ms": round(float(np.percentile(values, 90)), 4)}
        for name, values in samples.items()
    }


def agreement(path: str, images: np.ndarray) -> float:
    default, signed = session(path, False), session(path, True)
    name = default.get_inputs()[0].name
    same = 0
    for image in images:
        feed = {name: image[None].astype(np.float32)}
        same += int(np.argmax(default.run(None, feed)[0]) == np.argmax(signed.run(None, feed)[0]))
    return round(same / len(images), 4)


def measure(paths: dict, images: np.ndarray, runs: int) -> dict:
    from edgecls.runtime.engines import OnnxEngine

    rows = {}
    float_engine = OnnxEngine(Path(paths["float"]), threads=1)
    for kind in ("ptq", "qat"):
        path = paths[kind]
        engine = OnnxEngine(Path(path), threads=1)  # the verdict cache was emptied: chosen in this run
        feed_shape = tuple(dim for dim in engine.input.shape)
        frame = np.zeros(feed_shape, engine.input.dtype)
        float_frame = np.zeros(float_engine.input.shape, float_engine.input.dtype)
        chosen_signed = engine.int8_kernels is not None and engine.int8_kernels.kernels == "signed"
        calls = {
            "default": session_call(session(path, False), frame),
            "signed": session_call(session(path, True), frame),
            "chosen": session_call(session(path, chosen_signed), frame),
            "runtime": partial(engine.invoke_raw, frame),
            "float": partial(float_engine.invoke_raw, float_frame),
        }
        timings = time_interleaved(calls, runs)
        correct = {"default": timings["default"]["p50_ms"], "signed": timings["signed"]["p50_ms"]}
        same = agreement(path, images)
        if same < 1.0:  # the default path disagrees with the signed one: it is not a correct path here
            correct.pop("default")
        fastest = min(correct.values())
        rows[kind] = {
            "path": path,
            "timings": timings,
            "chosen_kernels": engine.int8_kernels.kernels if engine.int8_kernels else None,
            "chosen_reason": engine.int8_kernels.reason if engine.int8_kernels else None,
            "default_vs_signed_top1_agreement": same,
            "chosen_vs_fastest_correct": round(timings["chosen"]["p50_ms"] / fastest, 3),
            "within_5_percent": timings["chosen"]["p50_ms"] <= 1.05 * fastest,
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/int8_kernels.json"))
    parser.add_argument("--work", type=Path, default=Path("runs/bench-int8-kernels"))
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--qat-epochs", type=int, default=1)
    args = parser.parse_args()
    started = time.time()
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="int8-kernels-cache-")  # every verdict made in this run
    data = args.work / "photos10"
    if not (data / "val").is_dir():
        make_photoset(data, PHOTOS10, train_per_class=60, val_per_class=20, patch_size=64)
    from edgecls.data.folders import load_images

    images = load_images(data / "val", image_size=(64, 64), channel_order="RGB")[0].images[::6]
    results = {}
    for name, options in MODELS:
        paths = build_artifacts(args.work, data, name, options, args.epochs, args.qat_epochs)
        results[name] = {"val_top1_float": paths.pop("val_top1_float"), **measure(paths, images, args.runs)}
        print(name, json.dumps(results[name], indent=1), file=sys.stderr)
    import onnxruntime

    document = {
        "benchmark": "ONNX Runtime INT8 kernel paths: default vs signed vs edgecls.runtime's choice",
        "protocol": __doc__.split("\n\n")[1].replace("\n", " "),
        "cpu": cpu_record(),
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "threads": 1,
        "runs": args.runs,
        "models": results,
        "seconds": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
