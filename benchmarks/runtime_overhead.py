"""Runtime overhead: does ``edgecls bench`` measure what a raw loop measures, and what does ``predict`` add? (issue 6)

Writes ``benchmarks/results/runtime_overhead.json`` with, for MobileNetV2 (alpha 1.0,
96x96, INT8 TFLite, random weights: no downloads here) on this host:

1. the bench's p50 against an independent raw LiteRT ``Interpreter.invoke()``
   loop written below, in the same run (target: within 5 %);
2. ``Classifier.predict`` on a 640x480 BGR frame against raw ``invoke()``,
   medians in one process (target: <= 1.15x), next to the snippet predict
   replaces (resize, convert, set, invoke, get) with OpenCV's bilinear
   resize and with edgecls' anti-aliased one, and what other resizes would
   cost and lose (``resize_what_if``: the resize is most of predict's
   overhead);
3. remote bench through a loopback OpenSSH server against the local bench:
   same top-1, no temporary files left on the "device";
4. resident memory growth over 10,000 ``predict`` calls after warm-up
   (target: <= 2 MB), in a fresh runtime-only process.

Every latency is a host number (x86 here), one thread, stated with its engine.
Run: ``.venv/bin/python benchmarks/runtime_overhead.py`` (or ``make bench``); ~3-5 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the loopback sshd helper the remote tests use

RESULTS = ROOT / "benchmarks" / "results" / "runtime_overhead.json"
THREADS = 1  # one core of two shared ones: the steadiest figure this host gives
RUNS, WARMUP, ROUNDS = 300, 50, 5
BLOCK = 5  # calls per block when loops alternate in one process
PAIRED_ROUNDS, PAIRED_RUNS = 20, 100  # bench vs raw loop: many short alternating runs
MEMORY_CALLS = 10_000
FRAME_SHAPE = (480, 640, 3)


def build_int8_mobilenet(folder: Path, side: int = 96) -> Path:
    """MobileNetV2 alpha 1.0, side x side x 3 (96 here), 10 classes, full-integer INT8 through the LiteRT converter."""
    import tensorflow as tf

    from edgecls.export.tflite import write_tflite
    from edgecls.models import build_model
    from edgecls.runtime.metadata import ModelInfo

    model = build_model("mobilenetv2", num_classes=10, image_size=(side, side), channels=3, alpha=1.0)
    rng = np.random.default_rng(0)

    def representative_dataset():
        for _ in range(64):
            pixels = rng.integers(0, 256, (1, side, side, 3)).astype(np.float32)
            pixels[0, 0, 0, 0], pixels[0, 0, 0, 1] = 0.0, 255.0  # the full pixel range: input scale 1, zero point -128
            yield [pixels]

    info = ModelInfo(
        tuple(str(d) for d in range(10)),
        (side, side),
        3,
        "RGB",
        provenance={"source_model": "mobilenetv2", "precision": "int8", "weights": "random"},
    )
    path = folder / f"mobilenetv2_a1.0_{side}_int8.tflite"
    write_tflite(
        model,
        path,
        info,
        optimizations=[tf.lite.Optimize.DEFAULT],
        representative_dataset=representative_dataset,
        target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        inference_input_type=tf.int8,
        inference_output_type=tf.int8,
    )
    return path


RAW_LOOP = """
import json, statistics, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
model, threads, runs, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
interpreter = Interpreter(model_path=model, num_threads=threads)
interpreter.allocate_tensors()
detail = interpreter.get_input_details()[0]
interpreter.set_tensor(detail["index"], np.random.default_rng(0).integers(-128, 128, detail["shape"], dtype=np.int8))
for _ in range(warmup):
    interpreter.invoke()
samples = []
for _ in range(runs):
    started = time.perf_counter_ns()
    interpreter.invoke()
    samples.append((time.perf_counter_ns() - started) / 1e6)
print(json.dumps({"samples_ms": samples}))
"""


def raw_invoke_samples_ms(model: Path, runs: int) -> list[float]:
    """The independent reference: LiteRT's own Interpreter in a fresh process, input set once, invoke() timed."""
    completed = subprocess.run(
        [sys.executable, "-c", RAW_LOOP, str(model), str(THREADS), str(runs), str(WARMUP)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])["samples_ms"]


def compare_bench_with_raw_loop(model: Path) -> dict:
    """Short bench and raw-loop runs alternate many times; the p50 of each pooled sample decides.

    On this shared 2-core host latency is bimodal (a core of one's own, or
    half of one) and the mode changes every few seconds, so one long run of
    each would compare two different machines.
    """
    from edgecls.runtime.measure import measure_models
    from edgecls.runtime.results import MeasureConfig
    from edgecls.runtime.targets import get_target

    raw: list[float] = []
    measured: list[float] = []
    rounds = []
    for _ in range(PAIRED_ROUNDS):
        raw_round = raw_invoke_samples_ms(model, PAIRED_RUNS)
        result = measure_models(
            MeasureConfig(
                models=(str(model),), target=get_target("host"), threads=THREADS, runs=PAIRED_RUNS, warmup=WARMUP
            )
        ).results[0]
        raw += raw_round
        measured += result.samples_ms
        rounds.append({"raw_p50_ms": statistics.median(raw_round), "bench_p50_ms": result.latency_ms.p50})
    raw_p50, bench_p50 = statistics.median(raw), statistics.median(measured)
    difference = abs(bench_p50 - raw_p50) / raw_p50
    raw_p10, bench_p10 = float(np.percentile(raw, 10)), float(np.percentile(measured, 10))
    return {
        "rounds": rounds,
        "p10_relative_difference": abs(bench_p10 - raw_p10) / raw_p10,  # the uncontended mode: a core of one's own
        "raw_invoke_p10_ms": raw_p10,
        "bench_p10_ms": bench_p10,
        "bench_engine": f"{result.engine} {result.engine_version} ({result.provider}, {result.threads} thread)",
        "raw_invoke_p50_ms": raw_p50,
        "bench_p50_ms": bench_p50,
        "relative_difference": difference,
        "target": "<= 0.05",
        "passed": difference <= 0.05,
        "how": f"{PAIRED_ROUNDS} alternating rounds: a raw Interpreter.invoke() loop in a fresh process, then edgecls "
        f"bench (the model in its own process, as the CLI runs it), {PAIRED_RUNS} timed runs after {WARMUP} warm-up "
        f"each; p50 of the {PAIRED_ROUNDS * PAIRED_RUNS} pooled samples of each",
    }


def compare_predict_with_invoke(model: Path) -> dict:
    """Blocks of raw invoke(), of predict() and of the snippets predict replaces alternate in one process.

    Medians over all samples.
    """
    import cv2
    from ai_edge_litert.interpreter import Interpreter

    from edgecls.runtime import Classifier
    from edgecls.runtime.preprocess import resize

    classifier = Classifier(model, threads=THREADS)
    interpreter = Interpreter(model_path=str(model), num_threads=THREADS)  # independent of the Classifier's
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(
        detail["index"], np.random.default_rng(0).integers(-128, 128, detail["shape"], dtype=np.int8)
    )
    frame = np.random.default_rng(0).integers(0, 256, FRAME_SHAPE, dtype=np.uint8)
    model_sized = np.ascontiguousarray(frame[: detail["shape"][1], : detail["shape"][2]])  # nothing to resize
    height, width = int(detail["shape"][1]), int(detail["shape"][2])

    def snippet(resize_frame):
        """The page of snippets predict replaces, on an Interpreter of its own.

        Resize, BGR -> RGB, int8, set, invoke, get, best class.
        """
        snippet_interpreter = Interpreter(model_path=str(model), num_threads=THREADS)
        snippet_interpreter.allocate_tensors()
        input_index, output_index = (
            snippet_interpreter.get_input_details()[0]["index"],
            snippet_interpreter.get_output_details()[0]["index"],
        )

        def call():
            pixels = cv2.cvtColor(resize_frame(frame), cv2.COLOR_BGR2RGB)
            snippet_interpreter.set_tensor(input_index, np.bitwise_xor(pixels[None], 128).view(np.int8))
            snippet_interpreter.invoke()
            scores = snippet_interpreter.get_tensor(output_index)[0]
            return int(scores.argmax()), float(scores.max())

        return call

    calls = {
        "raw_invoke": interpreter.invoke,
        "predict": lambda: classifier.predict(frame),
        "predict_model_sized_frame": lambda: classifier.predict(model_sized),
        # Each on its own Interpreter, as predict and raw_invoke are: the first calls after another
        # interpreter ran are slower (its packed weights leave the caches), and every block pays that alike.
        "snippet_plain_bilinear": snippet(
            lambda image: cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        ),
        "snippet_edgecls_resize": snippet(lambda image: resize(image, height, width)),
    }
    samples = _alternating_samples(calls, block=BLOCK, per_call=ROUNDS * RUNS)
    medians = {name: statistics.median(samples[name]) for name in calls}
    raw_p50, predict_p50 = medians["raw_invoke"], medians["predict"]
    raw_p10, predict_p10 = (float(np.percentile(samples[name], 10)) for name in ("raw_invoke", "predict"))
    return {
        "p10": {"raw_invoke_ms": raw_p10, "predict_ms": predict_p10, "ratio": predict_p10 / raw_p10},
        "raw_invoke_p50_ms": raw_p50,
        "predict_p50_ms": predict_p50,
        "ratio": predict_p50 / raw_p50,
        "target": "<= 1.15",
        "passed": predict_p50 / raw_p50 <= 1.15,
        "predict_stages_p50_ms": _stage_costs(classifier, frame),
        "snippets": {
            "snippet_plain_bilinear_ratio": medians["snippet_plain_bilinear"] / raw_p50,
            "snippet_edgecls_resize_ratio": medians["snippet_edgecls_resize"] / raw_p50,
            "why": "the same frame through the few lines a user would otherwise write around a raw Interpreter (no "
            "lock, no checks, top-1 only), with OpenCV's default bilinear resize (aliased: it reads 4 of the ~33 "
            "pixels each output pixel covers) or edgecls' anti-aliased one: the first is what the usual snippet costs "
            "on this host, the gap from the second to predict is what Classifier itself adds",
        },
        "floor": {
            "predict_model_sized_frame_ratio": medians["predict_model_sized_frame"] / raw_p50,
            "first_call_after_invoke_us": _cold_call_cost(interpreter),
            "why": "each predict follows an invoke() that streams the model's weights through the core's cache, so the "
            "resize, conversion and top-k calls after it run cold: a frame that needs no resize still costs the ratio "
            "above, and one small numpy call right after invoke() costs the 'cold' figure against 'hot' when repeated; "
            "'cold_after_8mb_copy' is that call after a plain 8 MB copy instead (no VNNI/AMX code): close to 'cold' "
            "means the caches, not the CPU's state after XNNPACK's integer kernels, make the calls after invoke() slow",
        },
        "how": "Classifier.predict on a 640x480 BGR frame (resize + channel order + int8 input + inference + top-k) vs "
        f"a raw invoke() of its own Interpreter, one process, blocks of {BLOCK} calls alternating with the model-sized "
        f"frame and the two snippets, {ROUNDS * RUNS} samples each after {WARMUP} warm-up; medians",
    }


def _cold_call_cost(interpreter, runs: int = 300) -> dict:
    """Median time (µs) of one small numpy call (xor of a 96x96x3 uint8 array) right after invoke(), then repeated;
    and right after copying 8 MB (no VNNI/AMX code): if that costs the same, the caches, not the CPU's state after
    XNNPACK's integer kernels, make the calls after invoke() slow."""
    pixels = np.zeros((96, 96, 3), np.uint8)
    source = bytearray(8 << 20)
    after = {"cold": [], "hot": [], "cold_after_8mb_copy": []}
    for _ in range(runs):
        for prelude, key in ((interpreter.invoke, "cold"), (lambda: bytes(source), "cold_after_8mb_copy")):
            prelude()
            started = time.perf_counter_ns()
            np.bitwise_xor(pixels, 128)
            middle = time.perf_counter_ns()
            np.bitwise_xor(pixels, 128)
            after[key].append((middle - started) / 1e3)
            if key == "cold":
                after["hot"].append((time.perf_counter_ns() - middle) / 1e3)
    return {key: statistics.median(values) for key, values in after.items()}


def _median_ms(call, runs: int = 500) -> float:
    for _ in range(WARMUP):
        call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return statistics.median(samples)


def _stage_costs(classifier, frame: np.ndarray) -> dict:
    """Each step of predict alone, repeated back to back (warm caches).

    Their sum is what predict would cost without the cold start.
    """
    median_ms = _median_ms
    pixels = classifier.preprocess(frame)
    tensor = classifier.to_input(pixels[None])
    raw = classifier.engine.invoke_raw(tensor)[0]
    return {
        "preprocess (supersampling resize 640x480 -> 96x96, BGR -> RGB)": median_ms(
            lambda: classifier.preprocess(frame)
        ),
        "to_input (uint8 -> int8)": median_ms(lambda: classifier.to_input(pixels[None])),
        "engine.invoke_raw (set, invoke, get)": median_ms(lambda: classifier.engine.invoke_raw(tensor), runs=200),
        "top-k (dequantising only the k reported)": median_ms(lambda: classifier._top_k(raw, None)),
    }


def resize_what_if(model: Path) -> dict:
    """What other 640x480 -> 96x96 resizes would cost and lose, to see whether the 1.15x target is within reach.

    One Classifier; its own interpreter's invoke() alone, then (resize + that
    invoke()) for each resize, then the whole predict, timed as whole calls in
    alternating blocks of 20 (medians): the resize's own cost and what it does
    to the invoke after it, with nothing from a second interpreter in between.
    Quality: mean absolute difference in grey levels from OpenCV's exact box
    filter (INTER_AREA) on scikit-learn's two sample photos and on a zone plate.
    """
    import cv2
    from sklearn.datasets import load_sample_images

    from edgecls.runtime import Classifier
    from edgecls.runtime.preprocess import resize

    classifier = Classifier(model, threads=THREADS)
    photos = [
        cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), (640, 480), interpolation=cv2.INTER_AREA)
        for image in load_sample_images().images
    ]
    y, x = np.mgrid[0:480, 0:640].astype(np.float64)
    zone_plate = cv2.merge(
        [(127.5 + 127.5 * np.cos(((x - 320) ** 2 + (y - 240) ** 2) * np.pi / 900)).astype(np.uint8)] * 3
    )
    options = {
        "shipped: 4 bilinear samples (edgecls resize)": lambda image: resize(image, 96, 96),
        "4 nearest samples (nearest to 192x192, 2x2 area)": lambda image: cv2.resize(
            cv2.resize(image[::2], (192, 192), interpolation=cv2.INTER_NEAREST), (96, 96), interpolation=cv2.INTER_AREA
        ),
        "plain bilinear (no anti-aliasing)": lambda image: cv2.resize(image, (96, 96), interpolation=cv2.INTER_LINEAR),
        "exact box filter (INTER_AREA)": lambda image: cv2.resize(image, (96, 96), interpolation=cv2.INTER_AREA),
    }
    frame = photos[0]
    classifier.predict(frame)  # the interpreter's input now holds a real frame
    invoke = classifier.engine._interpreter.invoke
    calls = {"invoke": invoke, "predict (shipped)": lambda: classifier.predict(frame)}
    calls.update(
        {
            name: (lambda resize_frame=resize_frame: (resize_frame(frame), invoke()))
            for name, resize_frame in options.items()
        }
    )
    samples = _alternating_samples(calls, block=20, per_call=1000)
    invoke_ms = statistics.median(samples["invoke"])
    report = {"invoke_ms": invoke_ms, "predict_ratio": statistics.median(samples["predict (shipped)"]) / invoke_ms}
    references = [
        cv2.resize(image, (96, 96), interpolation=cv2.INTER_AREA).astype(int) for image in (*photos, zone_plate)
    ]
    for name, resize_frame in options.items():
        errors = [
            float(np.abs(resize_frame(image).astype(int) - reference).mean())
            for image, reference in zip((*photos, zone_plate), references)
        ]
        report[name] = {
            "resize_plus_invoke_ratio": statistics.median(samples[name]) / invoke_ms,
            "photo_error": round(statistics.mean(errors[:-1]), 2),
            "zone_plate_error": round(errors[-1], 1),
        }
    return {**report, "how": " ".join(resize_what_if.__doc__.split("\n\n", 1)[1].split())}


def _alternating_samples(calls: dict, *, block: int, per_call: int) -> dict[str, list[float]]:
    """Milliseconds per call of each callable, in alternating blocks of ``block`` calls after a warm-up."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(WARMUP):
            call()
    for _ in range(per_call // block):
        for name, call in calls.items():
            for _ in range(block):
                started = time.perf_counter_ns()
                call()
                samples[name].append((time.perf_counter_ns() - started) / 1e6)
    return samples


def remote_against_local(model: Path, scratch: Path) -> dict:
    from loopback_sshd import loopback_sshd, missing_reason

    from edgecls.bench import prepare_eval_set
    from edgecls.runtime.measure import measure_models
    from edgecls.runtime.remote import measure_remote
    from edgecls.runtime.results import MeasureConfig
    from edgecls.runtime.ssh import RemoteConfig
    from edgecls.runtime.targets import get_target

    reason = missing_reason()
    if reason:
        return {"skipped": reason}
    eval_dir = prepare_eval_set("digits", (str(model),), scratch / "eval")
    target = get_target("rpi5")
    local = measure_models(MeasureConfig(models=(str(model),), target=target, runs=50, warmup=10, data=str(eval_dir)))
    with loopback_sshd(scratch / "sshd") as device:
        config = RemoteConfig(
            device.destination,
            ssh_key=str(device.user_key),
            known_hosts=str(device.known_hosts),
            remote_python=sys.executable,
        )
        started = time.perf_counter()
        remote = measure_remote(config, models=[model], target=target, eval_dir=eval_dir, runs=50, warmup=10)
        seconds = time.perf_counter() - started
        left = sorted(str(p.relative_to(device.device_tmp)) for p in device.device_tmp.rglob("*"))
    local_top1, remote_top1 = local.results[0].top1, remote.results[0].top1
    return {
        "local_top1": local_top1,
        "remote_top1": remote_top1,
        "n_eval": remote.results[0].n_eval,
        "same_top1": local_top1 == remote_top1,
        "files_left_on_device": left,
        "passed": local_top1 == remote_top1 and not left,
        "remote_where": remote.where,
        "remote_p50_ms": remote.results[0].latency_ms.p50,
        "local_p50_ms": local.results[0].latency_ms.p50,
        "remote_seconds": round(seconds, 1),
        "how": "edgecls bench --target rpi5 --data digits, here and through OpenSSH on 127.0.0.1 (fresh keys, "
        "known_hosts checked); the eval set is the digits validation split as PNGs (random-weight model: the top-1 is "
        "near chance, what matters is that both agree)",
    }


MEMORY_PROBE = """
import json, sys
import numpy as np, psutil
from edgecls.runtime import Classifier
classifier = Classifier(sys.argv[1], threads=1)
frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
for _ in range(500):
    classifier.predict(frame)
process = psutil.Process()
before = process.memory_info().rss
for _ in range(int(sys.argv[2])):
    classifier.predict(frame)
after = process.memory_info().rss
tensorflow_loaded = any(m.startswith(("tensorflow", "keras")) for m in sys.modules)
record = {"rss_before_mb": before / 2**20, "rss_after_mb": after / 2**20, "tensorflow_loaded": tensorflow_loaded}
print(json.dumps(record))
"""


def memory_growth(model: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(model), str(MEMORY_CALLS)], capture_output=True, text=True, check=True
    )
    measured = json.loads(completed.stdout.strip().splitlines()[-1])
    growth = measured["rss_after_mb"] - measured["rss_before_mb"]
    return {
        **measured,
        "calls": MEMORY_CALLS,
        "warmup_calls": 500,
        "growth_mb": growth,
        "target": "<= 2 MB",
        "passed": growth <= 2.0,
        "how": "Classifier.predict on a 640x480 frame in a fresh runtime-only process, RSS (psutil) after 500 warm-up "
        "calls and after 10,000 more",
    }


def main() -> int:
    import importlib.metadata as metadata

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edgecls-bench-") as scratch_name:
        scratch = Path(scratch_name)
        model = build_int8_mobilenet(scratch)
        report = {
            "model": {
                "name": model.name,
                "size_bytes": model.stat().st_size,
                "architecture": "MobileNetV2 alpha 1.0, 96x96x3, 10 classes, random weights",
                "precision": "int8 (full integer, int8 input/output)",
            },
            "measured_on": {
                "where": "host (not a device)",
                "hostname": socket.gethostname(),
                "arch": platform.machine(),
                "cpu_count": os.cpu_count(),
                "load_average_at_start": os.getloadavg(),
                "engine": f"ai-edge-litert {metadata.version('ai-edge-litert')}",
                "threads": THREADS,
                "runs": RUNS,
                "warmup": WARMUP,
                "rounds": ROUNDS,
            },
            "bench_vs_raw_loop": compare_bench_with_raw_loop(model),
            "predict_vs_invoke": compare_predict_with_invoke(model),
            "resize_what_if": resize_what_if(model),
            "remote_vs_local": remote_against_local(model, scratch),
            "memory_growth": memory_growth(model),
        }
    report["seconds"] = round(time.time() - started, 1)
    report["measured_on"]["load_average_at_end"] = os.getloadavg()
    from edgecls.base.fileio import write_json

    write_json(RESULTS, report)
    for key in ("bench_vs_raw_loop", "predict_vs_invoke", "resize_what_if", "remote_vs_local", "memory_growth"):
        summary = {k: v for k, v in report[key].items() if k not in ("rounds", "how", "predict_stages_p50_ms", "floor")}
        print(f"{key}: {summary}")
    print(f"wrote {RESULTS}")
    return 0  # the verdicts are in the JSON ("passed"); a miss must not stop `make bench` from running the others


if __name__ == "__main__":
    sys.exit(main())
