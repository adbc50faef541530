"""Benchmark of ``edgecls quantize`` (issue 3): accuracy, size and host latency of INT8 artifacts.

Writes ``benchmarks/results/quantize.json`` with:

1. the digits CNN of ``make demo`` (``runs/demo/model.keras`` when it exists,
   else one trained here with the same options): INT8 TFLite and INT8 ONNX
   top-1 against float on its validation split (359 images), calibrated on
   ``calib_data/digits`` — training-split images only. Target: each within
   0.5 points, and plain INT8 (nothing kept in float) is reported too;
2. the same model with ``--io uint8``: the runtime's ``Classifier`` feeds the
   uint8 frame as it is (input scale 1, zero point 0, no copy, no float math);
3. MobileNetV2 (alpha 1.0, 96x96, 10 classes; random weights, no downloads
   here): INT8 TFLite size against FP32 TFLite. Target: <= 0.30x;
4. latency of every FP32 and INT8 artifact on this host through the runtime's
   ``Classifier`` (``edgecls.runtime.measure.measure_model``, the code path of
   ``edgecls bench``), one thread. Host numbers are host numbers: an x86
   server says nothing about a Raspberry Pi's ARM cores.

Run: ``.venv/bin/python benchmarks/quantize.py`` (or ``make bench``); about
6-9 minutes on 2 shared cores, 3 more when the digits model must be trained.
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
RESULTS = ROOT / "benchmarks" / "results" / "quantize.json"
WORK = ROOT / "runs" / "bench-quantize"
CALIB = ROOT / "calib_data" / "digits"
DEMO_MODEL = ROOT / "runs" / "demo" / "model.keras"
THREADS, RUNS, WARMUP = 1, 200, 20
MAX_DROP = 0.5  # points
MAX_SIZE_RATIO = 0.30


def digits_model() -> tuple[Path, str]:
    """The ``make demo`` model, or the same recipe trained here."""
    if DEMO_MODEL.exists():
        return DEMO_MODEL, "runs/demo/model.keras (make demo)"
    from edgecls.train import TrainConfig, train

    trained = WORK / "cnn-digits" / "model.keras"
    if not trained.exists():
        train(TrainConfig(data="digits", model="cnn", epochs=20, out=str(trained.parent)))  # make demo's options
    return trained, "trained here with make demo's options (cnn, digits, 20 epochs, seed 0)"


def mobilenet_model(num_classes: int) -> Path:
    import keras

    from edgecls.adapters.keras_io import save_keras_model
    from edgecls.models import build_model
    from edgecls.runtime.metadata import ModelInfo

    path = WORK / f"mobilenetv2-{num_classes}" / "model.keras"
    if not path.exists():
        keras.utils.set_random_seed(0)
        model = build_model("mobilenetv2", num_classes=num_classes, image_size=(96, 96), channels=3, alpha=1.0)
        labels = tuple(str(index) for index in range(num_classes))
        info = ModelInfo(
            labels=labels,
            input_size=(96, 96),
            channels=3,
            channel_order="RGB",
            provenance={"source_model": "mobilenetv2", "weights": "random (seed 0)"},
        )
        save_keras_model(model, path, info)
    return path


def tflite_size_breakdown(path: str) -> dict:
    """Where an INT8 TFLite file's bytes go: weights, biases, per-channel quantization parameters."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))
    subgraph = model.subgraphs[0]
    data = {"INT8": 0, "INT32": 0, "FLOAT32": 0}
    channels = 0
    for tensor in subgraph.tensors:
        buffer = model.buffers[tensor.buffer].data
        kind = flatbuffer_utils.type_to_name(tensor.type)
        data[kind] = data.get(kind, 0) + (len(buffer) if buffer is not None else 0)
        quantization = tensor.quantization
        if quantization is not None and quantization.scale is not None and len(quantization.scale) > 1:
            channels += len(quantization.scale)
    return {
        "int8_weight_bytes": data["INT8"],
        "int32_bias_bytes": data["INT32"],
        "float32_bytes": data["FLOAT32"],
        "per_channel_entries": channels,
        "per_channel_param_bytes": channels
        * 12,  # the schema stores a float32 scale and an int64 zero point per channel
        "names_bytes": sum(len(tensor.name or b"") for tensor in subgraph.tensors),
    }


def artifact_summary(artifact) -> dict:
    plain = artifact.attempts[0] if artifact.attempts else None
    return {
        "path": os.path.relpath(artifact.path, ROOT),
        "format": artifact.format,
        "precision": artifact.precision,
        "io": artifact.io,
        "scheme": artifact.scheme,
        "size_bytes": artifact.size_bytes,
        "fp32_size_bytes": artifact.fp32_size_bytes,
        "size_ratio": artifact.size_ratio,
        "top1": artifact.top1,
        "drop_points": artifact.drop,
        "agreement": artifact.agreement,
        "float_layers": artifact.float_layers,
        "plain_int8_top1": plain.top1 if plain else None,
        "plain_int8_drop_points": plain.drop if plain else None,
        "float_ops": artifact.float_ops,
        "worst_layers": [{"layers": w.layers, "op": w.op_type, "error": w.error} for w in artifact.worst_layers[:3]],
        "seconds": artifact.seconds,
    }


def latency(path: Path) -> dict:
    from edgecls.runtime.measure import measure_model

    measured = measure_model(path, threads=THREADS, runs=RUNS, warmup=WARMUP)
    return {
        "model": os.path.relpath(path, ROOT),
        "engine": f"{measured.engine} {measured.engine_version}",
        "provider": measured.provider,
        "threads": measured.threads,
        "input_dtype": measured.input_dtype,
        "runs": RUNS,
        "warmup": WARMUP,
        "min_ms": round(measured.latency_ms.min, 4),
        "p50_ms": round(measured.latency_ms.p50, 4),
        "p90_ms": round(measured.latency_ms.p90, 4),
        "e2e_p50_ms": round(measured.e2e_ms, 4),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    from edgecls.export import export
    from edgecls.quantize import QuantizeConfig, quantize
    from edgecls.runtime import Classifier
    from edgecls.runtime.device import machine_info

    started = time.time()
    WORK.mkdir(parents=True, exist_ok=True)
    model_path, model_origin = digits_model()

    # 1. digits: INT8 TFLite + ONNX against float, budget 0.5 points
    digits = quantize(
        model_path,
        QuantizeConfig(calib=str(CALIB), eval_data="digits", max_drop=MAX_DROP, out=str(WORK / "digits-int8")),
    )
    digits_artifacts = {a.format: a for a in digits.artifacts}

    # 2. uint8 I/O: the camera frame goes in as bytes
    uint8 = quantize(
        model_path,
        QuantizeConfig(
            calib=str(CALIB),
            formats=("tflite",),
            io="uint8",
            eval_data="digits",
            max_drop=MAX_DROP,
            out=str(WORK / "digits-uint8"),
        ),
    )
    (uint8_artifact,) = uint8.artifacts
    classifier = Classifier(uint8_artifact.path)
    frame_pixels = np.ascontiguousarray(
        np.random.default_rng(0).integers(
            0, 256, (1, *classifier.info.input_size, classifier.info.channels), dtype=np.uint8
        )
    )
    fed = classifier.to_input(frame_pixels)
    spec = classifier.engine.input

    # 3. MobileNetV2 size: 10 classes (TFLite + ONNX, also timed below) and the standard 1000-class head (TFLite)
    mobilenet_path = mobilenet_model(10)
    mobilenet = quantize(
        mobilenet_path, QuantizeConfig(calib=str(CALIB), calib_size=100, out=str(WORK / "mobilenetv2-10-int8"))
    )
    mobilenet_artifacts = {a.format: a for a in mobilenet.artifacts}
    imagenet_head = quantize(
        mobilenet_model(1000),
        QuantizeConfig(calib=str(CALIB), calib_size=100, formats=("tflite",), out=str(WORK / "mobilenetv2-1000-int8")),
    )
    (imagenet_tflite,) = imagenet_head.artifacts

    # 4. host latency, FP32 vs INT8, through the runtime
    fp32 = {}
    for name, path in (("digits", model_path), ("mobilenetv2", mobilenet_path)):
        exported = export(path, formats=("tflite", "onnx"), out_dir=WORK / f"{name}-fp32")
        fp32[name] = {a.format: Path(a.path) for a in exported.artifacts}
    latencies = []
    for name, quantized in (("digits", digits_artifacts), ("mobilenetv2", mobilenet_artifacts)):
        for fmt in ("tflite", "onnx"):
            for precision, path in (("fp32", fp32[name][fmt]), ("int8", Path(quantized[fmt].path))):
                latencies.append({"model": name, "format": fmt, "precision": precision, **latency(path)})
    latencies.append(
        {"model": "digits", "format": "tflite", "precision": "int8 (uint8 I/O)", **latency(Path(uint8_artifact.path))}
    )

    machine = machine_info()
    checks = {
        "digits_tflite_int8_within_0.5_points": digits_artifacts["tflite"].drop <= MAX_DROP,
        "digits_onnx_int8_within_0.5_points": digits_artifacts["onnx"].drop <= MAX_DROP,
        "digits_plain_int8_needed_no_float_layers": all(not a.float_layers for a in digits.artifacts),
        "uint8_frame_fed_as_bytes": bool(
            spec.dtype == np.uint8
            and spec.scale == 1.0
            and spec.zero_point == 0
            and (fed is frame_pixels or np.shares_memory(fed, frame_pixels))
        ),
        "mobilenetv2_10_classes_int8_tflite_size_at_most_0.30x_fp32": mobilenet_artifacts["tflite"].size_ratio
        <= MAX_SIZE_RATIO,
        "mobilenetv2_1000_classes_int8_tflite_size_at_most_0.30x_fp32": imagenet_tflite.size_ratio <= MAX_SIZE_RATIO,
    }
    results = {
        "benchmark": "quantize (issue 3)",
        "where": f"{machine.arch} host ({cpu_name()}, {machine.cpu_count} cores shared with other jobs, "
        f"{machine.system}), not a device",
        "digits": {
            "model": model_origin,
            "eval": f"{digits.n_eval_images} validation images of digits (the model's own split)",
            "calibration": {
                k: digits.calibration[k] for k in ("folder", "n_images", "manifest_sha256", "method", "per_channel")
            },
            "float_top1": digits.float_top1,
            "max_drop_points": MAX_DROP,
            "artifacts": [artifact_summary(a) for a in digits.artifacts],
        },
        "uint8_io": {
            **artifact_summary(uint8_artifact),
            "runtime_input": {"dtype": str(spec.dtype), "scale": spec.scale, "zero_point": spec.zero_point},
            "to_input_returns_the_frame_buffer": bool(fed is frame_pixels or np.shares_memory(fed, frame_pixels)),
        },
        "mobilenetv2": {
            "model": "mobilenetv2 alpha 1.0, 96x96x3, random weights (no downloads here; sizes do not depend on weight "
            "values), per-channel weights",
            "why_not_0.25": "per-channel INT8 stores, for every output channel of every conv and its bias, a float32 "
            "scale and an int64 zero point (12 bytes; the TFLite schema requires one per channel): ~34,000 channels in "
            "MobileNetV2 1.0, ~4.6 % of the FP32 file. A 10-class head leaves the 2.2 M backbone weights alone, so the "
            "ratio sits at 0.30; the standard 1000-class head adds 1.3 M weights with few channels",
            "10_classes": {
                "artifacts": [artifact_summary(a) for a in mobilenet.artifacts],
                "tflite_breakdown": tflite_size_breakdown(mobilenet_artifacts["tflite"].path),
            },
            "1000_classes": {
                "artifacts": [artifact_summary(imagenet_tflite)],
                "tflite_breakdown": tflite_size_breakdown(imagenet_tflite.path),
            },
        },
        "latency": {
            "measured_with": "edgecls.runtime.measure.measure_model (Classifier → Engine.invoke_raw), batch 1, "
            f"{THREADS} thread, {RUNS} runs after {WARMUP} warm-up, p50/p90; e2e = Classifier.predict on a 640x480 BGR "
            "frame",
            "where": f"{machine.arch} host, not a Raspberry Pi or Jetson; its {machine.cpu_count} cores are shared "
            "with other jobs (load_average_1min beside each figure): compare min_ms first, p50/p90 move with the "
            "neighbours",
            "results": latencies,
        },
        "checks": checks,
        "seconds": round(time.time() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(
        json.dumps(
            {"checks": checks, "results": str(RESULTS.relative_to(ROOT)), "seconds": results["seconds"]}, indent=2
        )
    )
    return 0  # the verdicts are in the JSON ("checks"); a miss must not stop `make bench` from running the others


if __name__ == "__main__":
    sys.exit(main())
