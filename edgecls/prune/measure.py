"""Before/after figures of a pruned model: size, MACs, TFLite latency.

Latency goes through the runtime's ``Classifier`` on FP32 TFLite files, one
thread, both models in the same process and interleaved (A, B, A, B, …), so a
neighbour's load on a shared host slows both alike instead of one. The timing
itself is the runtime's loop (``edgecls.runtime.measure.time_calls``), the one
``edgecls bench`` uses.

>>> figures = compare_latency(("before.tflite", "after.tflite"), threads=1)  # doctest: +SKIP
>>> figures["latency_ms"]  # doctest: +SKIP
[1.92, 0.98]
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def compare_latency(
    paths: Sequence[str | Path], *, threads: int = 1, runs: int = 300, warmup: int = 20, rounds: int = 30
) -> dict[str, Any]:
    """Median latency (ms, batch 1, one ``Engine.invoke_raw`` on a ready input) of each model.

    The ``runs`` timed calls per model are split into ``rounds`` blocks that
    alternate between the models.
    """
    from edgecls.runtime import Classifier
    from edgecls.runtime.measure import random_input, time_calls

    classifiers = [Classifier(path, threads=threads) for path in paths]
    rng = np.random.default_rng(0)
    calls = []
    for classifier in classifiers:
        tensor = random_input(classifier, rng)
        engine = classifier.engine
        calls.append(lambda engine=engine, tensor=tensor: engine.invoke_raw(tensor))
    for call in calls:  # every model warm before any is timed
        for _ in range(warmup):
            call()
    samples: list[list[float]] = [[] for _ in calls]
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for call, timings in zip(calls, samples):
            timings += time_calls(call, runs=per_round)
    engine = classifiers[0].engine
    return {
        "latency_ms": [round(float(np.median(timings)), 4) for timings in samples],
        "min_ms": [round(float(np.min(timings)), 4) for timings in samples],
        "p10_ms": [round(float(np.percentile(timings, 10)), 4) for timings in samples],
        "p90_ms": [round(float(np.percentile(timings, 90)), 4) for timings in samples],
        "where": f"host ({platform.machine()}), not a device",
        "engine": f"{engine.name} {engine.version}",
        "provider": engine.provider,
        "threads": engine.threads,
        "runs": per_round * rounds,
        "warmup": warmup,
        "statistic": "median of batch-1 invoke, models interleaved in one process",
    }


def tflite_fp32(model: Any, path: str | Path, info: Any) -> Path:
    """Write ``model`` as FP32 TFLite with ``info`` embedded (the export stage's writer)."""
    from edgecls.export.tflite import write_tflite

    return write_tflite(model, path, info)
