"""The early stops of a trial: the pre-training latency/size gate, and the successive-halving gate.

Optuna's pruners refuse multi-objective studies (``trial.report`` raises ``NotImplementedError``), so the gates are
ours. The first runs before any training: a candidate's latency depends on its architecture, input size, uniform
prune ratio and precision, not on its trained weights, so the untrained candidate is built, cut with the pruner's
own ``prune_channels`` (the channel counts a uniform ratio keeps do not depend on the weights), written at its
precision (INT8 calibrated on a few training images: ``write_candidate``) and timed on the target
(``measure_on_target``, the code ``edgecls prune --target-latency-ms`` measures with). Over a budget, the trial is
recorded with its constraint above 0 and never trained. The second promotes to the full training budget only
trials whose rung-1 score is in the running top fraction of every rung-1 score so far; the others raise
``optuna.TrialPruned``.

>>> constraints(Latency(21.0, 20.5, 21.4, 22.0, 50.0, "here"), size_mb=3.0, max_latency_ms=20.0, max_size_mb=4.0)
{'latency_ms': 1.0, 'size_mb': -1.0}
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.tune.space import Choices, Measuring

MB = 1024 * 1024


@dataclass(frozen=True)
class Device:
    """One device that measures: a target profile, here (``remote`` None) or over SSH."""

    target: Any  # edgecls.runtime.targets.Target
    remote: Any = None  # RemoteConfig
    threads: int | None = None

    @property
    def name(self) -> str:
        return f"{self.remote.destination} ({self.target.name})" if self.remote is not None else self.target.name


@dataclass(frozen=True)
class Latency:
    """Milliseconds on the target: the median of each round's p50 (a round: a fresh process, ``runs`` timed calls),
    the lowest and highest round p50 (the interval front points are compared by), the median p90, peak memory."""

    p50_ms: float
    low_ms: float
    high_ms: float
    p90_ms: float
    peak_rss_mb: float
    where: str
    emulated: str = ""  # non-empty: measured under emulation, the figure is not the device's
    device: str = ""  # with a fleet: the slowest device, whose figures these are

    @property
    def spread_ms(self) -> float:
        return self.high_ms - self.low_ms

    def overlaps(self, other: Latency) -> bool:
        return self.low_ms <= other.high_ms and other.low_ms <= self.high_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "spread_ms": self.spread_ms}


def measure_latency(path: Path, devices: list[Device], measuring: Measuring, *, lock: Path | None = None) -> Latency:
    """``path`` timed ``measuring.rounds`` times on every device (one at a time: ``lock``); the slowest device."""
    from edgecls.prune.latency import measure_on_target

    measured = []
    with device_lock(lock):
        for device in devices:
            run = measure_on_target(
                [path] * measuring.rounds, device.target, remote=device.remote, threads=device.threads,
                runs=measuring.runs, warmup=measuring.warmup,
            )  # fmt: skip
            results = run.results
            p50s = [result.latency_ms.p50 for result in results]
            first = results[0]
            where = f"{run.where}, {first.engine} {first.engine_version} {first.provider}, {first.threads} threads"
            measured.append(
                Latency(
                    statistics.median(p50s),
                    min(p50s),
                    max(p50s),
                    statistics.median(result.latency_ms.p90 for result in results),
                    max(result.peak_rss_mb for result in results),
                    where,
                    first.emulated,
                    device.name,
                )
            )
    return max(measured, key=lambda latency: latency.p50_ms)


@contextlib.contextmanager
def device_lock(path: Path | None) -> Iterator[None]:
    """One measurement at a time among this machine's workers (the device queue); None: no lock."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def constraints(
    latency: Latency, *, size_mb: float, max_latency_ms: float, max_size_mb: float | None, prefix: str = ""
) -> dict[str, float]:
    """Optuna's constraint values: ≤ 0 is within budget (the excess in ms / MB, else how much room is left).

    ``prefix`` ``pretrain_``: the untrained candidate's; a trained trial also gets the final artifact's (Optuna keeps
    the first value set under a key, so each measurement has keys of its own; any value above 0 is infeasible).
    """
    values = {f"{prefix}latency_ms": latency.p50_ms - max_latency_ms}
    if max_size_mb is not None:
        values[f"{prefix}size_mb"] = size_mb - max_size_mb
    return values


def set_constraints(trial: Any, values: dict[str, float]) -> bool:
    """Set them on the trial (each key once); whether they are all within budget."""
    for key, value in values.items():
        trial.set_constraint(key, float(value))
    return all(value <= 0 for value in values.values())


@dataclass(frozen=True)
class Candidate:
    """The untrained candidate, measured: what the pre-training gate decides on."""

    latency: Latency
    size_mb: float
    macs: int
    params: int


def build_candidate(choices: Choices, *, classes: int, channels: int) -> Any:
    """The untrained candidate as the trial will deploy it: the backbone at its width and size, cut uniformly."""
    from edgecls.models import build_model
    from edgecls.prune import PruneConfig, prune_channels

    model = build_model(
        choices.backbone,
        num_classes=classes,
        image_size=(choices.size, choices.size),
        channels=channels,
        **({"alpha": choices.alpha} if choices.alpha is not None else {}),
    )
    if choices.ratio:
        # the cut of the trained model (edgecls.prune.prune at this ratio), without data: no BatchNorm statistics
        # to re-estimate, nothing to fine-tune; the kept channel counts are the same
        config = PruneConfig(ratio=choices.ratio, finetune_epochs=0, adaptive_bn=False, measure_tflite=False)
        model = prune_channels(model, config)
    return model


def measure_candidate(
    choices: Choices,
    *,
    info: Any,
    calibration: np.ndarray,
    devices: list[Device],
    measuring: Measuring,
    lock: Path | None = None,
) -> Candidate:
    """Build, cut, write (INT8 calibrated on ``calibration``) and time the untrained candidate."""
    import keras

    from edgecls.models.stats import count_params_and_macs
    from edgecls.prune.latency import write_candidate

    model = build_candidate(choices, classes=len(info.labels), channels=info.channels)
    params, macs = count_params_and_macs(model)
    info = info.with_provenance(tune_candidate=choices.to_dict())
    with tempfile.TemporaryDirectory(prefix="edgecls-tune-") as scratch:
        path = write_candidate(
            model, Path(scratch) / f"candidate_{choices.precision}.tflite", info, choices.precision, calibration
        )
        size_mb = path.stat().st_size / MB
        latency = measure_latency(path, devices, measuring, lock=lock)
    del model
    keras.backend.clear_session()
    return Candidate(latency, size_mb, macs, params)


def threshold(scores: list[float], fraction: float) -> float:
    """The lowest score still in the top ``fraction`` of ``scores``: the best ``round(n x fraction)``, at least one.

    >>> threshold([0.9, 0.8, 0.7], 0.34), threshold([0.5], 0.34)
    (0.9, 0.5)
    """
    ranked = sorted(scores, reverse=True)
    keep = max(1, math.floor(len(ranked) * fraction + 0.5))
    return ranked[keep - 1]


def halving_gate(trial: Any, score: float, fraction: float) -> None:
    """Raise ``optuna.TrialPruned`` unless ``score`` (rung-1 top-1) is in the running top ``fraction`` of the
    study's rung-1 scores: every trial that reached rung 1 and did not fail, this one included (ties promote)."""
    import optuna

    scores = [score] + [
        float(other.user_attrs["rung1_top1"])
        for other in trial.study.get_trials(deepcopy=False)
        if other.number != trial.number
        and "rung1_top1" in other.user_attrs
        and other.state != optuna.trial.TrialState.FAIL
    ]
    needed = threshold(scores, fraction)
    if score < needed:
        raise optuna.TrialPruned(
            f"rung-1 top-1 {100 * score:.1f} % is not in the top {100 * fraction:.0f} % of {len(scores)} "
            f"(needed {100 * needed:.1f} %)"
        )
