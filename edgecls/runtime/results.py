"""What a measuring session reports: typed, JSON round-trippable results (the device's answer over SSH).

``MeasureRun.to_dict()`` is what ``python -m edgecls.runtime.measure --json`` prints on a device;
``MeasureRun.from_dict`` reads it back on the workstation, checking every field against its
annotation before anything uses it (a device running a newer edgecls may report more keys).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecls.runtime.corruptions import CorruptionSpec
from edgecls.runtime.targets import Target


@dataclass(frozen=True)
class MeasureConfig:
    models: tuple[str, ...]
    target: Target
    threads: int | None = None  # None: the target's threads
    runs: int = 200
    warmup: int = 20
    data: str | None = None  # an evaluation folder of <label>/ subfolders
    isolate: bool = True  # one fresh process per model
    corruptions: CorruptionSpec | None = None  # with data: also top-1 with each frame corrupted first


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds."""

    min: float
    p50: float
    p90: float
    p99: float
    mean: float
    std: float

    @classmethod
    def of(cls, samples_ms: list[float]) -> LatencyStats:
        values = np.asarray(samples_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(float(values.min()), float(p50), float(p90), float(p99), float(values.mean()), float(values.std()))


@dataclass(frozen=True)
class StartTimes:
    """Seconds to open a model: the first start and, with a TensorRT engine cache, a second (cached) one."""

    first: float
    cached: float | None = None  # None: no engine cache in use (LiteRT, ONNX Runtime on the CPU)
    cache_hit_before: bool | None = None  # the first start found an engine built from this file

    def text(self) -> str:
        """``0.012`` or ``95.20 (engine built), cached 1.30``: seconds."""
        if self.cached is None:
            return f"{self.first:.3f}"
        how = "engine from the cache" if self.cache_hit_before else "engine built"
        return f"{self.first:.2f} ({how}), cached {self.cached:.2f}"


@dataclass(frozen=True)
class MeasureResult:
    """What one model measured, and where (the context fields are filled by ``measure_models``)."""

    model: str
    engine: str
    engine_version: str
    provider: str  # the delegate / execution provider actually used
    threads: int
    precision: str
    input_dtype: str
    runs: int
    warmup: int
    load_ms: float
    cold_start_ms: float
    latency_ms: LatencyStats
    fps: float  # batch 1, from the timed loop
    e2e_ms: float  # median of Classifier.predict on a 640x480 BGR frame
    e2e_latency_ms: LatencyStats
    peak_rss_mb: float  # the measuring process' peak resident memory
    baseline_rss_mb: float  # its resident memory before the model was loaded
    size_bytes: int
    top1: float | None = None
    n_eval: int = 0
    eval_skipped: int = 0
    samples_ms: list[float] = field(default_factory=list)
    target: str = ""
    where: str = ""
    on_target: bool = False
    hostname: str = ""
    arch: str = ""
    throttled: bool = False
    device_state: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    start_s: StartTimes | None = None  # None: from a device whose edgecls predates it
    severities: list[int] = field(default_factory=list)  # with corruptions: their order in each list below
    corruptions: dict[str, list[float]] = field(default_factory=dict)  # name -> top-1 per severity
    mean_corruption_top1: float | None = None  # over every corruption and severity
    emulated: str = ""  # "aarch64 under emulation on an x86_64 host": every latency here is not the device's

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, document: Any) -> MeasureResult:
        """Read a result written by ``to_dict``; ``ValueError`` names the first missing or mistyped field."""
        result: MeasureResult = _from_document(cls, document, "result")
        return result


@dataclass(frozen=True)
class MeasureRun:
    """One measuring session on one machine: its settings and every model's result."""

    target: str
    where: str
    on_target: bool
    machine: dict[str, Any]
    settings: dict[str, Any]
    results: list[MeasureResult]
    device_state: dict[str, Any] = field(default_factory=dict)  # read before the first model
    remote: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, document: Any) -> MeasureRun:
        """Read a run written by ``to_dict`` (a device's JSON): every field is checked before anything uses it."""
        run: MeasureRun = _from_document(cls, document, "run")
        return run


def _from_document(cls: Any, document: Any, where: str) -> Any:
    """The dataclass ``cls`` from a JSON ``document``, each field checked against its annotation.

    A device running a newer edgecls may report more: unknown keys are ignored.
    A missing field without a default, or a value of another type, is a ``ValueError`` naming it.
    """
    if not isinstance(document, dict):
        raise ValueError(f"{where}: expected an object, got {_json_type(document)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for spec in dataclasses.fields(cls):
        if spec.name in document:
            values[spec.name] = _conform(document[spec.name], hints[spec.name], f"{where}.{spec.name}")
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where}.{spec.name} is missing")
    return cls(**values)


def _conform(value: Any, hint: Any, where: str) -> Any:
    if hint is Any:
        return value
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        (kind,) = [argument for argument in arguments if argument is not type(None)]
        return _conform(value, kind, where)
    if dataclasses.is_dataclass(hint):
        return _from_document(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {_json_type(value)}")
        return [_conform(item, arguments[0], f"{where}[{index}]") for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {_json_type(value)}")
        return {key: _conform(item, arguments[1], f"{where}.{key}") for key, item in value.items()}
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{where}: expected {_JSON_NAMES.get(hint, hint.__name__)}, got {_json_type(value)}")


_JSON_NAMES = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}


def _json_type(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    names = {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    shown = repr(value) if isinstance(value, (str, int, float)) and len(repr(value)) <= 40 else ""
    return names.get(type(value), type(value).__name__) + (f" {shown}" if shown else "")
