"""Latency, memory and accuracy of artifacts, measured with the runtime alone: the timing loop.

Runs on the device with numpy, OpenCV and one engine (psutil optional)::

    python3 -m edgecls.runtime.measure model.tflite --target rpi5 --data eval/ --json

Each model is measured in a fresh process of its own (``isolate``), so its
load time, cold start and peak resident memory are its own and not the sum of
the models before it. Every number goes through ``Classifier``: latency is its
engine's call on a ready input tensor (``Engine.invoke_raw``, what a raw
interpreter loop costs), end-to-end is ``Classifier.predict`` on a 640x480 BGR
frame, accuracy is ``Classifier.predict`` over an evaluation folder
(``edgecls.runtime.scoring``). ``time_calls`` is the one timing loop: pruning's
before/after latency goes through it too.

Engines are opened at the target's first precision (what TensorRT builds an
``.onnx`` for). ``start_s`` is the model's start: ``first`` the engine's load
(with TensorRT, the engine build unless its cache already held it:
``cache_hit_before``), and, when a TensorRT engine cache is in use, ``cached``:
a second session created after the first, which loads the cached engine.

>>> run = measure_models(MeasureConfig(models=("m.tflite",), target=get_target("rpi5")))  # doctest: +SKIP
>>> run.results[0].where  # doctest: +SKIP
'x86_64 host with rpi5 settings'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgecls.base.errors import ConfigError, EdgeclsError, ModelError
from edgecls.runtime.corruptions import CorruptionSpec, parse_severities
from edgecls.runtime.device import EMULATED_LATENCY, describe_where, machine_info, read_device_state
from edgecls.runtime.engines import load_engine
from edgecls.runtime.model import Classifier
from edgecls.runtime.results import LatencyStats, MeasureConfig, MeasureResult, MeasureRun, StartTimes
from edgecls.runtime.scoring import artifact_precision, evaluate_folder, evaluate_folder_corrupted
from edgecls.runtime.targets import Target, get_target

log = logging.getLogger(__name__)

FRAME_SHAPE = (480, 640, 3)  # a VGA camera frame, BGR
TARGET_ENGINE_BY_SUFFIX = {".tflite": "litert", ".onnx": "onnxruntime"}  # as target files name engines


def measure_models(config: MeasureConfig) -> MeasureRun:
    """Measure every model of ``config`` on this machine, with the target's settings."""
    if config.runs < 1 or config.warmup < 0:
        raise EdgeclsError(f"--runs must be >= 1 and --warmup >= 0, got {config.runs} and {config.warmup}")
    target = config.target
    machine = machine_info()
    on_target, where = describe_where(target, machine)
    threads = config.threads or target.resolved_threads()
    precision = target.precisions[0] if target.precisions else None
    state_before = read_device_state()
    results = []
    for model in config.models:
        log.info(
            "benchmarking %s (%s, %d threads, %d runs after %d warm-up)",
            model,
            where,
            threads,
            config.runs,
            config.warmup,
        )
        state = read_device_state()
        measure = _measure_in_subprocess if config.isolate else measure_model
        measured = measure(
            model,
            threads=threads,
            providers=target.providers,
            runs=config.runs,
            warmup=config.warmup,
            data=config.data,
            precision=precision,
            corruptions=config.corruptions,
        )
        state_after = read_device_state()
        results.append(
            dataclasses.replace(
                measured,
                target=target.name,
                where=where,
                on_target=on_target,
                hostname=machine.hostname,
                arch=machine.arch,
                throttled=bool(state["throttled"] or state_after["throttled"]),
                device_state=state_after,
                emulated=machine.emulated,
                notes=[
                    *([f"{machine.emulated}: {EMULATED_LATENCY}"] if machine.emulated else []),
                    *measured.notes,
                    *_fit_notes(measured, target),
                    *_oversubscription_note(threads, machine.cpu_count),
                ],
            )
        )
    settings = {
        "runs": config.runs,
        "warmup": config.warmup,
        "threads": threads,
        "providers": list(target.providers),
        "precision": precision,
        "data": config.data,
        "isolated": config.isolate,
        "corruption_seed": config.corruptions.seed if config.corruptions else None,
    }
    return MeasureRun(target.name, where, on_target, machine.to_dict(), settings, results, state_before)


def measure_model(
    path: str | Path,
    *,
    threads: int,
    providers: tuple[str, ...] = (),
    runs: int = 200,
    warmup: int = 20,
    data: str | None = None,
    precision: str | None = None,
    corruptions: CorruptionSpec | None = None,
) -> MeasureResult:
    """Time and score one model in this process; ``precision`` is what TensorRT builds an ``.onnx`` for.

    With ``data`` and ``corruptions``, the evaluation folder is scored again under each corruption and severity.
    """
    path = Path(path)
    baseline_rss = _current_rss_mb()
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    classifier = Classifier(path, threads=threads, providers=tuple(providers), precision=precision)
    load_ms = (time.perf_counter() - started) * 1e3
    engine = classifier.engine
    tensor = random_input(classifier, rng)

    started = time.perf_counter()
    engine.invoke_raw(tensor)
    cold_start_ms = (time.perf_counter() - started) * 1e3
    samples_ms = time_calls(lambda: engine.invoke_raw(tensor), runs=runs, warmup=warmup)
    frame = rng.integers(0, 256, FRAME_SHAPE, dtype=np.uint8)
    e2e = LatencyStats.of(time_calls(lambda: classifier.predict(frame), runs=runs, warmup=warmup))

    top1, n_eval, skipped = evaluate_folder(classifier, data) if data else (None, 0, 0)
    corrupted = evaluate_folder_corrupted(classifier, data, corruptions) if data and corruptions else {}
    every = [value for values in corrupted.values() for value in values]
    latency = LatencyStats.of(samples_ms)
    notes = []
    if providers and engine.name == "onnxruntime" and engine.provider.split(" ", 1)[0] != providers[0]:
        notes.append(f"asked for {providers[0]}, ONNX Runtime used {engine.provider}")
    delegation = getattr(engine, "delegation", None)
    partitions, outside = delegation() if delegation is not None else (0, {})
    if partitions > 1 or outside:  # a split graph: each hand-over and each op on the built-in kernels costs
        left = ", ".join(f"{name} x{count}" for name, count in sorted(outside.items(), key=lambda kv: -kv[1]))
        notes.append(f"XNNPACK took the graph in {partitions} partitions; built-in kernels ran {left}")
    int8_kernels = getattr(engine, "int8_kernels", None)
    if int8_kernels is not None:  # which of ONNX Runtime's INT8 kernel paths ran, and why (edgecls.runtime.onnx_int8)
        notes.append(f"ONNX Runtime {int8_kernels.describe()}")
    peak_rss_mb = _peak_rss_mb()  # before a second session: the model's own peak, not two copies of it
    start, start_notes = _start_times(
        classifier, load_ms, threads=threads, providers=tuple(providers), precision=precision
    )
    notes += start_notes
    return MeasureResult(
        model=str(path),
        engine=engine.name,
        engine_version=engine.version,
        provider=engine.provider,
        threads=engine.threads,
        precision=artifact_precision(classifier),
        input_dtype=str(engine.input.dtype),
        runs=runs,
        warmup=warmup,
        load_ms=load_ms,
        cold_start_ms=cold_start_ms,
        latency_ms=latency,
        fps=1e3 * runs / sum(samples_ms),
        e2e_ms=e2e.p50,
        e2e_latency_ms=e2e,
        peak_rss_mb=peak_rss_mb,
        baseline_rss_mb=baseline_rss,
        size_bytes=path.stat().st_size,
        top1=top1,
        n_eval=n_eval,
        eval_skipped=skipped,
        samples_ms=[round(sample, 5) for sample in samples_ms],
        notes=notes,
        start_s=start,
        severities=list(corruptions.severities) if corrupted and corruptions else [],
        corruptions=corrupted,
        mean_corruption_top1=round(float(np.mean(every)), 4) if every else None,
    )


def _start_times(
    classifier: Classifier, load_ms: float, *, threads: int, providers: tuple[str, ...], precision: str | None
) -> tuple[StartTimes, list[str]]:
    """The first start (the engine's own session time where it keeps one) and, with an engine cache, a second.

    The second session is opened once the first has built (and cached) its
    engine, as the next start of a camera script would; it is closed at once.
    """
    engine = classifier.engine
    first = getattr(engine, "load_seconds", None) or load_ms / 1e3
    cache_hit = getattr(engine, "cache_hit", None)
    if cache_hit is None:  # no TensorRT engine cache: a second start would time the same thing again
        return StartTimes(first=first), []
    second = load_engine(classifier.path, threads=threads, providers=providers, precision=precision)
    cached, second_hit = getattr(second, "load_seconds", 0.0), getattr(second, "cache_hit", None)
    del second
    notes = []
    if not second_hit:
        notes.append("TensorRT's engine cache held no engine after the first start: the cached start built it again")
    return StartTimes(first=first, cached=cached, cache_hit_before=cache_hit), notes


def random_input(classifier: Classifier, rng: np.random.Generator) -> np.ndarray:
    """A ready batch-1 input tensor for ``classifier``'s engine, from random uint8 pixels."""
    height, width = classifier.info.input_size
    return classifier.to_input(rng.integers(0, 256, (1, height, width, classifier.info.channels), dtype=np.uint8))


def time_calls(call: Callable[[], object], *, runs: int, warmup: int = 0) -> list[float]:
    """Milliseconds of each of ``runs`` calls, after ``warmup`` untimed ones: the one timing loop."""
    for _ in range(warmup):
        call()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        started = clock()
        call()
        samples.append((clock() - started) / 1e6)
    return samples


def _oversubscription_note(threads: int, cpu_count: int) -> list[str]:
    """More engine threads than cores (a 4-thread Pi profile on a 2-core host) time the OS scheduler, not the model."""
    if threads <= cpu_count:
        return []
    return [f"{threads} threads on {cpu_count} cores: oversubscribed, latency is not what {threads} cores give"]


def _fit_notes(measured: MeasureResult, target: Target) -> list[str]:
    notes = []
    engine = TARGET_ENGINE_BY_SUFFIX.get(Path(measured.model).suffix.lower(), measured.engine)
    if engine not in target.engines:
        notes.append(f"{target.name} profiles {', '.join(target.engines)}, not {engine}")
    if measured.precision in ("int8", "fp16", "fp32") and measured.precision not in target.precisions:
        notes.append(f"{measured.precision} does not suit {target.name} (suits {', '.join(target.precisions)})")
    return notes


def _measure_in_subprocess(
    model: str,
    *,
    threads: int,
    providers: tuple[str, ...],
    runs: int,
    warmup: int,
    data: str | None,
    precision: str | None = None,
    corruptions: CorruptionSpec | None = None,
) -> MeasureResult:
    command = [sys.executable, "-m", "edgecls.runtime.measure", "--worker", str(model)]
    command += ["--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup)]
    if providers:
        command += ["--providers", ",".join(providers)]
    if precision:
        command += ["--precision", precision]
    if data:
        command += ["--data", str(data)]
    if corruptions:
        command += corruptions.arguments()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        detail = (errors or lines or [f"exit status {completed.returncode}"])[-1]
        raise ModelError(f"{model}: benchmark failed: {detail.removeprefix('error: ')}")
    try:
        return MeasureResult.from_dict(json.loads(completed.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError) as exc:
        raise ModelError(f"{model}: the measuring process printed no valid result ({exc})") from exc


def _current_rss_mb() -> float:
    try:
        import psutil

        return float(psutil.Process().memory_info().rss / 2**20)
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _peak_rss_mb() -> float:
    """This process' peak resident memory.

    Linux: ``VmHWM`` of this address space. Not ``ru_maxrss``, which a child
    started by fork+exec inherits from its parent's peak.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere
    except ImportError:  # Windows
        return _current_rss_mb()


# --- command line (the device has no typer) -----------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edgecls.runtime.measure", description="Measure .tflite/.onnx models with the edgecls runtime."
    )
    parser.add_argument("models", nargs="+", help="model files")
    parser.add_argument(
        "--target", default="host", help="target name or target file (.toml/.json) whose settings to use"
    )
    parser.add_argument("--threads", type=int, default=None, help="threads (default: the target's)")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--data", default=None, help="evaluation folder of <label>/ subfolders")
    parser.add_argument(
        "--corruptions",
        default=None,
        help="with --data: also top-1 under these camera corruptions (comma list, or 'all')",
    )
    parser.add_argument("--severities", default="1..5", help="with --corruptions: e.g. 1..5, 2-4 or 1,3,5")
    parser.add_argument("--corruption-seed", type=int, default=0, help="image i's corruption is seeded by (seed, i)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--in-process", action="store_true", help="measure every model in this process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--providers", default="", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default=None, help=argparse.SUPPRESS)  # the target's first, for TensorRT
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        corruptions = _corruption_spec(arguments)
        if arguments.worker:
            providers = tuple(p for p in arguments.providers.split(",") if p)
            measured = measure_model(
                arguments.models[0],
                threads=arguments.threads,
                providers=providers,
                runs=arguments.runs,
                warmup=arguments.warmup,
                data=arguments.data,
                precision=arguments.precision,
                corruptions=corruptions,
            )
            print(json.dumps(measured.to_dict()))
            return 0
        config = MeasureConfig(
            models=tuple(arguments.models),
            target=get_target(arguments.target),
            threads=arguments.threads,
            runs=arguments.runs,
            warmup=arguments.warmup,
            data=arguments.data,
            isolate=not arguments.in_process,
            corruptions=corruptions,
        )
        run = measure_models(config)
    except EdgeclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        if not arguments.worker:
            raise
        # The parent shows one line: the engine's own error (often several lines) as one.
        print(f"error: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    if arguments.json:
        print(json.dumps(run.to_dict()))
    else:
        host = "" if run.machine["hostname"] in run.where else f" ({run.machine['hostname']})"
        print(
            f"measured on {run.where}{host}, {run.settings['threads']} threads, "
            f"{run.settings['runs']} runs after {run.settings['warmup']} warm-up"
        )
        for result in run.results:
            scored = f"({result.n_eval} images, {result.eval_skipped} skipped)"
            top1 = "-" if result.top1 is None else f"{result.top1:.2%} {scored}"
            print(
                f"{result.model}: p50 {result.latency_ms.p50:.3f} ms  p99 {result.latency_ms.p99:.3f} ms  "
                f"{result.fps:.1f} fps  "
                f"e2e {result.e2e_ms:.3f} ms  top-1 {top1}  peak RSS {result.peak_rss_mb:.0f} MB  "
                f"start {result.start_s.text() if result.start_s else '-'} s  "
                f"[{result.engine} {result.engine_version}, {result.provider}]"
            )
            if result.mean_corruption_top1 is not None:
                severities = ",".join(map(str, result.severities))
                print(f"  under corruptions (severities {severities}): mean top-1 {result.mean_corruption_top1:.2%}")
                for name, values in result.corruptions.items():
                    print(f"    {name}: {'  '.join(f'{value:.2%}' for value in values)}")
    return 0


def _corruption_spec(arguments: argparse.Namespace) -> CorruptionSpec | None:
    if not arguments.corruptions:
        return None
    if not arguments.data:
        raise ConfigError("--corruptions scores the --data folder: give one")
    names = None if arguments.corruptions == "all" else [n for n in arguments.corruptions.split(",") if n]
    return CorruptionSpec.of(names, parse_severities(arguments.severities), arguments.corruption_seed)


if __name__ == "__main__":
    sys.exit(main())
