"""Which of ONNX Runtime's two INT8 kernel paths runs a Q/DQ ONNX on this CPU: correct first, then the faster.

On x86, ONNX Runtime runs a Q/DQ graph's integer kernels one of two ways:

- **unsigned** (its default there): INT8 activations shifted to UINT8, U8S8 kernels. Without VNNI they multiply
  with VPMADDUBSW, which adds pairs of 8-bit products in *saturating* 16-bit lanes: with weights that use the
  full signed range (|w| > 64: QAT's grid, the TensorRT scheme) a pair sum can pass 32,767 and the result is
  wrong (a QAT EfficientNet-B0 disagreed with its own graph on 2.2 % of images; a Q/DQ MatMul at the ends of the
  range gave 0). 7-bit weights (``reduce_range``, edgecls' ``cpu`` scheme) cannot overflow: 255 · 64 · 2 < 32,768.
  With VNNI (VPDPBUSD accumulates in 32 bits) or AMX nothing saturates.
- **signed** (``session.qdqisint8allowed = 1``; ARM's default): S8S8 kernels. Correct everywhere; on a CPU with
  AVX-512 VNNI it can be a slow fallback (a digits ``cnn`` 9.9x slower on a Xeon) or faster (a MobileNetV3-Small
  0.70x), so on x86 the choice depends on the CPU *and* the model.

``choose_kernels`` decides: ARM (and any non-x86 CPU) keeps ONNX Runtime's own default; x86 without VNNI and with
full-range weights takes the signed path whatever the timing; everywhere else both paths are correct and the
faster one, measured on a few interleaved runs when the session is made, is taken. The measured verdict is cached
per model file (its digest), CPU, ONNX Runtime version and thread count in ``~/.cache/edgecls/`` (``XDG_CACHE_HOME``
moves it), so a camera script pays the measurement once. ``EDGECLS_ONNX_INT8_KERNELS=signed|unsigned`` forces one.

A Q/DQ graph's weights are read from the file with a small protobuf walk (the fields of ``onnx.proto`` it needs),
since the device install has ONNX Runtime but not the ``onnx`` package.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecls.base.fileio import file_digest, write_json

log = logging.getLogger(__name__)

SIGNED = "signed"
UNSIGNED = "unsigned"
DEFAULT = "default"  # ONNX Runtime's own choice (ARM: signed)
FORCE_VARIABLE = "EDGECLS_ONNX_INT8_KERNELS"
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8"})  # /proc/cpuinfo names
SAFE_UNSIGNED_WEIGHT = 64  # |w| ≤ 64: 255 · 64 · 2 = 32,640 fits VPMADDUBSW's signed 16-bit lanes
CACHE_FILE = "onnx-int8-kernels.json"
TIMED_RUNS = 9  # per path, interleaved, after WARMUP_RUNS each: the median decides
WARMUP_RUNS = 2
MAX_MEASURE_S = 2.0  # a slow model is timed on fewer runs rather than delaying its session for long


@dataclass(frozen=True)
class Cpu:
    """The few facts about this CPU that decide the INT8 path."""

    machine: str  # platform.machine(): x86_64, aarch64, ...
    model: str  # /proc/cpuinfo's "model name" (what the cache is keyed by)
    flags: frozenset[str]

    @property
    def x86(self) -> bool:
        return self.machine.lower() in ("x86_64", "amd64", "i386", "i686", "x86")

    @property
    def vnni(self) -> bool:
        return bool(self.flags & VNNI_FLAGS)


@dataclass(frozen=True)
class KernelChoice:
    """The path taken and why, in words for reports (``engine.provider``, bench's where line)."""

    kernels: str  # signed | unsigned | default
    reason: str
    signed_ms: float | None = None  # the interleaved medians, when measured
    unsigned_ms: float | None = None

    def describe(self) -> str:
        return f"INT8 {self.kernels} kernels: {self.reason}"


def this_cpu() -> Cpu:
    """The machine's architecture, CPU model and flags (Linux's ``/proc/cpuinfo``; elsewhere no flags)."""
    model, flags = "", frozenset[str]()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:  # x86 says flags, ARM says Features
            flags = frozenset(value.split())
    return Cpu(platform.machine(), model or platform.processor() or platform.machine(), flags)


def choose_kernels(cpu: Cpu, *, full_range_weights: bool, measure: Callable[[], tuple[float, float]]) -> KernelChoice:
    """The INT8 path for a Q/DQ graph on ``cpu``; ``measure()`` times both, returning (signed_ms, unsigned_ms).

    >>> choose_kernels(Cpu("x86_64", "AMD EPYC", frozenset({"avx2"})), full_range_weights=True, measure=None).kernels
    'signed'
    """
    fixed = fixed_kernels(cpu, full_range_weights=full_range_weights)
    return fixed if fixed is not None else measured_kernels(cpu, *measure())


def fixed_kernels(cpu: Cpu, *, full_range_weights: bool) -> KernelChoice | None:
    """The path where no timing is needed (not x86; x86 where the unsigned kernels would saturate), else None."""
    if not cpu.x86:
        return KernelChoice(DEFAULT, f"ONNX Runtime's default on {cpu.machine} (signed INT8 kernels)")
    if full_range_weights and not cpu.vnni:
        return KernelChoice(
            SIGNED, "x86 without VNNI and full 8-bit weights, where the unsigned kernels' 16-bit sums saturate"
        )
    return None


def measured_kernels(cpu: Cpu, signed_ms: float, unsigned_ms: float) -> KernelChoice:
    """The faster of two correct paths, by their interleaved medians."""
    kernels = SIGNED if signed_ms < unsigned_ms else UNSIGNED
    why = "VNNI" if cpu.vnni else "7-bit weights"
    return KernelChoice(
        kernels,
        f"faster here ({why}; measured {signed_ms:.3g} ms signed vs {unsigned_ms:.3g} ms unsigned, interleaved)",
        signed_ms,
        unsigned_ms,
    )


def forced_kernels() -> KernelChoice | None:
    """``EDGECLS_ONNX_INT8_KERNELS=signed|unsigned`` (a user's override), else None."""
    value = os.environ.get(FORCE_VARIABLE, "").strip().lower()
    if not value:
        return None
    if value not in (SIGNED, UNSIGNED):
        log.warning("%s=%r ignored: it takes signed or unsigned", FORCE_VARIABLE, value)
        return None
    return KernelChoice(value, f"set by {FORCE_VARIABLE}")


def time_interleaved(run_signed: Callable[[], object], run_unsigned: Callable[[], object]) -> tuple[float, float]:
    """Median milliseconds of each, warmed up, then alternated run by run (a slow model gets fewer runs)."""
    for _ in range(WARMUP_RUNS):
        run_signed()
        run_unsigned()
    signed: list[float] = []
    unsigned: list[float] = []
    started = time.perf_counter()
    for index in range(TIMED_RUNS):
        for run, samples in (
            ((run_signed, signed), (run_unsigned, unsigned))
            if index % 2
            else (
                (run_unsigned, unsigned),
                (run_signed, signed),
            )
        ):
            begun = time.perf_counter()
            run()
            samples.append((time.perf_counter() - begun) * 1000)
        if time.perf_counter() - started > MAX_MEASURE_S and index >= 2:
            break
    return statistics.median(signed), statistics.median(unsigned)


# -- the verdict cache --------------------------------------------------------------------------------------------


def cache_key(path: Path, cpu: Cpu, onnxruntime_version: str, threads: int) -> str:
    # the model name alone does not tell CPUs apart ("AMD EPYC" with and without VNNI): its flags go in too
    flags = hashlib.sha256(" ".join(sorted(cpu.flags)).encode()).hexdigest()[:8]
    return f"{file_digest(path)}|{cpu.model}|{flags}|{onnxruntime_version}|{threads}"


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgecls" / CACHE_FILE


def cached_choice(key: str) -> KernelChoice | None:
    try:
        entry = json.loads(cache_path().read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(entry, dict) or entry.get("kernels") not in (SIGNED, UNSIGNED):
        return None
    reason = f"{entry.get('reason', 'measured')} (cached)"
    return KernelChoice(entry["kernels"], reason, entry.get("signed_ms"), entry.get("unsigned_ms"))


def store_choice(key: str, choice: KernelChoice) -> None:
    """Add a measured verdict to the cache file; a cache that cannot be written is only a repeated measurement."""
    path = cache_path()
    try:
        document = json.loads(path.read_text()) if path.is_file() else {}
        if not isinstance(document, dict):
            document = {}
        document[key] = {
            "kernels": choice.kernels,
            "reason": choice.reason,
            "signed_ms": choice.signed_ms,
            "unsigned_ms": choice.unsigned_ms,
        }
        write_json(path, document)
    except (OSError, ValueError) as exc:
        log.debug("INT8 kernel verdict not cached (%s)", exc)


# -- what the graph holds: a minimal protobuf walk over onnx.proto ------------------------------------------------

ONNX_INT8 = 3  # TensorProto.DataType.INT8
# field numbers (onnx.proto): ModelProto.graph 7; GraphProto.node 1, .initializer 5; NodeProto.input 1, .op_type 4;
# TensorProto.dims 1, .data_type 2, .int32_data 5, .name 8, .raw_data 9, .data_location 14
_MODEL_GRAPH, _GRAPH_NODE, _GRAPH_INITIALIZER = 7, 1, 5
_NODE_INPUT, _NODE_OP_TYPE = 1, 4
_TENSOR_DATA_TYPE, _TENSOR_INT32_DATA, _TENSOR_NAME, _TENSOR_RAW_DATA, _TENSOR_LOCATION = 2, 5, 8, 9, 14


@dataclass(frozen=True)
class QdqWeights:
    """The INT8 weights of a Q/DQ graph: how many DequantizeLinear nodes dequantize a constant, their largest |w|."""

    quantized: bool  # the graph has QuantizeLinear/DequantizeLinear nodes at all
    int8_weights: int
    max_abs: int  # largest |level| over them; -1 when some weight could not be read (external data)

    @property
    def full_range(self) -> bool:
        """Weights that may overflow the unsigned kernels' 16-bit pair sums (unknown counts as full)."""
        return self.max_abs < 0 or self.max_abs > SAFE_UNSIGNED_WEIGHT


def qdq_weights(path: Path) -> QdqWeights:
    """Walk the ``.onnx`` file: which constants its DequantizeLinear nodes read, and their INT8 range."""
    data = memoryview(Path(path).read_bytes())
    graph = next((value for field, value in _fields(data) if field == _MODEL_GRAPH), None)
    if not isinstance(graph, memoryview):
        return QdqWeights(False, 0, 0)
    dequantized: set[str] = set()
    quantized = False
    int8_tensors: dict[str, int] = {}
    for field, value in _fields(graph):
        if field == _GRAPH_NODE and isinstance(value, memoryview):
            op_type, first_input = _node(value)
            if op_type in ("QuantizeLinear", "DequantizeLinear"):
                quantized = True
            if op_type == "DequantizeLinear" and first_input:
                dequantized.add(first_input)
        elif field == _GRAPH_INITIALIZER and isinstance(value, memoryview):
            name, largest = _int8_tensor_range(value)
            if name is not None:
                int8_tensors[name] = largest
    ranges = [int8_tensors[name] for name in dequantized if name in int8_tensors]
    max_abs = -1 if any(r < 0 for r in ranges) else max(ranges, default=0)
    return QdqWeights(quantized, len(ranges), max_abs)


def _node(message: memoryview) -> tuple[str, str]:
    op_type, first_input = "", ""
    for field, value in _fields(message):
        if field == _NODE_OP_TYPE and isinstance(value, memoryview):
            op_type = bytes(value).decode("utf-8", "replace")
        elif field == _NODE_INPUT and isinstance(value, memoryview) and not first_input:
            first_input = bytes(value).decode("utf-8", "replace")
    return op_type, first_input


def _int8_tensor_range(message: memoryview) -> tuple[str | None, int]:
    """(name, largest |level|) of an INT8 initializer (-1: stored outside the file); (None, 0) for other types."""
    name, data_type, raw, packed, external = "", 0, b"", [], False
    for field, value in _fields(message):
        if field == _TENSOR_NAME and isinstance(value, memoryview):
            name = bytes(value).decode("utf-8", "replace")
        elif field == _TENSOR_DATA_TYPE and isinstance(value, int):
            data_type = value
        elif field == _TENSOR_RAW_DATA and isinstance(value, memoryview):
            raw = bytes(value)
        elif field == _TENSOR_INT32_DATA:  # INT8 levels written one varint each (packed or not)
            packed.extend(_varints(value) if isinstance(value, memoryview) else [_signed(value)])
        elif field == _TENSOR_LOCATION and value == 1:
            external = True
    if data_type != ONNX_INT8:
        return None, 0
    if external:
        return name, -1
    levels = np.frombuffer(raw, np.int8) if raw else np.array(packed, np.int64).astype(np.int8)
    return name, int(np.abs(levels.astype(np.int16)).max()) if levels.size else 0


def _fields(message: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of each field: varints as int, length-delimited as a view, fixed-width skipped."""
    position, end = 0, len(message)
    while position < end:
        key, position = _varint(message, position)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(message, position)
            yield field, value
        elif wire == 2:
            length, position = _varint(message, position)
            yield field, message[position : position + length]
            position += length
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        else:  # groups (3, 4) are not in onnx.proto: a file this walk does not understand
            raise ValueError(f"unexpected protobuf wire type {wire} at byte {position}")


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _varints(data: memoryview) -> list[int]:
    values, position = [], 0
    while position < len(data):
        value, position = _varint(data, position)
        values.append(_signed(value))
    return values


def _signed(value: int) -> int:
    """A varint read back as the int64 it encodes (negative numbers are written as 10-byte two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value
