"""Pruning to a latency: candidates measured on the target, here or on the device over SSH.

A user's budget is "under 8 ms on my Pi", not a channel fraction. MACs predict latency only roughly (a depthwise
layer costs more per MAC than a pointwise one, and kernels run 8 or 16 channels at a time), so ``search_latency``
measures: it plans a cut for a MACs fraction from the sensitivity scan (``allocate``), rebuilds the model, writes it
at the target's precision (INT8 calibrated on training images for a Pi, FP16 for a Jetson's GPU, else FP32) and
times it with the target's settings through ``edgecls.runtime`` (``measure_models`` here, ``measure_remote`` on
the device); a bisection over the fraction ends on the largest model that meets the budget.

>>> found = search_latency(plan_for, build, probe, target_ms=8.0)  # doctest: +SKIP
>>> found.latency_ms, found.allocation.macs / found.allocation.macs_before  # doctest: +SKIP
(7.8, 0.46)
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.base.errors import ConfigError
from edgecls.prune.allocate import Allocation

log = logging.getLogger(__name__)

SEARCH_PROBES = 8  # measured candidates at most (the unpruned model's first)
TOLERANCE = 0.05  # a candidate within 5 % under the budget ends the search
PROBE_RUNS, PROBE_WARMUP = 100, 10
CALIBRATION_IMAGES = 64  # an INT8 candidate's calibration: latency does not depend on the ranges

# (model file paths) -> p50 ms of each, and a line saying where and how they were measured
LatencyProbe = Callable[[list[Path]], tuple[list[float], str]]


@dataclass
class LatencySearch:
    allocation: Allocation
    latency_ms: float
    target_ms: float
    probes: list[dict[str, Any]] = field(default_factory=list)  # every candidate: MACs fraction, latency
    where: str = ""


def measure_on_target(
    paths: list[Path],
    target: Any,
    *,
    remote: Any = None,
    threads: int | None = None,
    runs: int = PROBE_RUNS,
    warmup: int = PROBE_WARMUP,
) -> Any:
    """A ``MeasureRun`` of model files with ``target``'s settings: here (each in a fresh process) or on ``remote``
    over SSH; a path listed twice is measured twice, each time in a process of its own."""
    if remote is not None:
        from edgecls.runtime.remote import measure_remote

        return measure_remote(remote, models=paths, target=target, runs=runs, warmup=warmup, threads=threads)
    from edgecls.runtime.measure import measure_models
    from edgecls.runtime.results import MeasureConfig

    config = MeasureConfig(
        models=tuple(str(path) for path in paths), target=target, threads=threads, runs=runs, warmup=warmup
    )
    return measure_models(config)


def target_probe(target: Any, *, remote: Any = None, threads: int | None = None) -> LatencyProbe:
    """Time model files with ``target``'s settings: here (each in a fresh process) or on ``remote`` over SSH."""

    def probe(paths: list[Path]) -> tuple[list[float], str]:
        run = measure_on_target(paths, target, remote=remote, threads=threads)
        results = {Path(result.model).name: result for result in run.results}
        first = run.results[0]
        where = f"{first.where}, {first.engine} {first.engine_version} {first.provider}, {first.threads} threads"
        return [results[path.name].latency_ms.p50 for path in paths], where

    return probe


def write_candidate(model: Any, path: Path, info: Any, precision: str, images: np.ndarray) -> Path:
    """``model`` as the TFLite a device would run: INT8 (calibrated on ``images``), FP16 or FP32."""
    from edgecls.export.tflite import fp16_options, int8_options, write_tflite

    if precision == "int8":
        return write_tflite(model, path, info, **int8_options(images[:CALIBRATION_IMAGES]))
    if precision == "fp16":
        return write_tflite(model, path, info, **fp16_options())
    return write_tflite(model, path, info)


def search_latency(
    plan_for: Callable[[float], Allocation],
    build: Callable[[Allocation], Any],
    write: Callable[[Any, Path], Path],
    probe: LatencyProbe,
    *,
    target_ms: float,
    lowest_fraction: float,
) -> LatencySearch:
    """The largest plan (by MACs fraction, bisected) whose measured latency is at most ``target_ms``.

    ``plan_for(fraction)`` allocates a cut to that fraction of the MACs; ``build`` makes its model; ``write`` its
    file; ``probe`` times files. Raises ``ConfigError`` when even the smallest plan misses the budget.
    """
    probes: list[dict[str, Any]] = []
    where = ""
    with tempfile.TemporaryDirectory(prefix="edgecls-latency-") as scratch:

        def measure(fraction: float) -> tuple[Allocation, float]:
            nonlocal where
            allocation = plan_for(fraction)
            path = write(build(allocation), Path(scratch) / f"candidate_{len(probes)}.tflite")
            (latency,), where = probe([path])
            achieved = allocation.macs / allocation.macs_before
            probes.append({"macs_fraction": round(achieved, 4), "latency_ms": round(latency, 4)})
            log.info("latency search: %.3f of the MACs -> %.3f ms (budget %.3f ms)", achieved, latency, target_ms)
            return allocation, latency

        best: tuple[Allocation, float] | None = None
        high, low = 1.0, lowest_fraction
        full = measure(high)
        if full[1] <= target_ms:
            return LatencySearch(full[0], full[1], target_ms, probes, where)  # already fast enough: nothing to cut
        smallest = measure(low)
        if smallest[1] > target_ms:
            fraction = smallest[0].macs / smallest[0].macs_before
            raise ConfigError(
                f"--target-latency-ms {target_ms:g}: the smallest plan (MACs x {fraction:.3f}) still takes "
                f"{smallest[1]:.3f} ms on {where}; the unpruned model takes {full[1]:.3f} ms"
            )
        best = smallest
        # latency is roughly proportional to MACs: start where the proportion says, then bisect
        guess = low + (high - low) * (target_ms - smallest[1]) / max(full[1] - smallest[1], 1e-9)
        for _ in range(SEARCH_PROBES - 2):
            fraction = min(max(guess, low), high)
            allocation, latency = measure(fraction)
            if latency <= target_ms:
                low, best = fraction, (allocation, latency)
                if latency >= (1 - TOLERANCE) * target_ms:
                    break
            else:
                high = fraction
            guess = (low + high) / 2
            if high - low < 0.005:
                break
        return LatencySearch(best[0], best[1], target_ms, probes, where)
