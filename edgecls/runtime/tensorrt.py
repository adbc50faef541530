"""ONNX Runtime's TensorRT execution provider, configured for a device that restarts often.

Without options, ONNX Runtime's TensorRT provider builds an FP32 engine on every
session start (minutes on a Jetson Nano) and never uses INT8. ``provider_list``
turns a requested provider order into what ``InferenceSession(providers=...)``
takes, with ``tensorrt_options`` for TensorRT:

- FP16 kernels (``trt_fp16_enable``) when the wanted precision is fp16 (or int8,
  for the layers a Q/DQ graph leaves in float);
- INT8 (``trt_int8_enable``) when the graph carries QuantizeLinear/DequantizeLinear
  nodes: TensorRT reads the scales from them (explicit quantization), no
  calibration table is needed, and without the flag it refuses to build them;
- an engine cache and a timing cache in ``<model>.trt-cache/`` beside the model,
  so that the second start deserialises the engine instead of building it.

ONNX Runtime names cached engines by the graph's topology, not its weights, so a
re-exported model under the same name would load the old engine.
``prepare_cache`` keeps the model's SHA-256 in the cache and drops engines
built from another file (the timing cache, per layer and GPU, is kept).

Option names are those of ONNX Runtime's TensorRT provider (1.12 and later);
values are strings, as the C API takes them.

>>> tensorrt_options(Path("m.onnx"), "fp16", has_qdq=False)["trt_fp16_enable"]
'True'
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from edgecls.base.errors import ConfigError
from edgecls.base.fileio import write_text

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PRECISIONS = ("fp32", "fp16", "int8")
CACHE_SUFFIX = ".trt-cache"
FINGERPRINT_FILE = "model.sha256"
ENGINE_PATTERNS = ("*.engine", "*.profile")  # what ONNX Runtime writes per TensorRT subgraph

# The op_type field (NodeProto field 4, length-delimited) holding a Q/DQ op, as protobuf encodes it.
_QDQ_OP_TYPES = (b"\x22\x0eQuantizeLinear", b"\x22\x10DequantizeLinear")

ProviderEntry = str | tuple[str, dict[str, str]]


def cache_dir_for(model_path: Path) -> Path:
    """``model.onnx`` → ``model.onnx.trt-cache/`` in the same folder."""
    return model_path.with_name(model_path.name + CACHE_SUFFIX)


def tensorrt_options(model_path: Path, precision: str, *, has_qdq: bool, device_id: int = 0) -> dict[str, str]:
    """TensorRT provider options for one model at one precision (a pure function of its arguments).

    ``precision`` is the precision wanted on the device (a target's first).
    INT8 is enabled exactly when the graph has Q/DQ nodes; an int8 wish for a
    float graph builds FP16, since TensorRT's implicit INT8 needs a
    calibration table that edgecls does not make.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"TensorRT precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    cache = str(cache_dir_for(model_path))
    return {
        "device_id": str(device_id),
        "trt_fp16_enable": _flag(precision in ("fp16", "int8")),
        "trt_int8_enable": _flag(has_qdq),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
    }


def cuda_options(*, device_id: int = 0) -> dict[str, str]:
    """CUDA provider options for the nodes TensorRT does not take.

    ``kSameAsRequested``: on a Jetson the GPU shares the board's 4-8 GB with
    the CPU, and the default arena doubles its size on each growth.
    """
    return {"device_id": str(device_id), "arena_extend_strategy": "kSameAsRequested"}


def provider_list(
    requested: tuple[str, ...], available: list[str], model_path: Path, *, precision: str, has_qdq: bool
) -> list[ProviderEntry]:
    """The requested providers that are available, in order, TensorRT and CUDA with their options.

    Nothing available (or nothing requested) is the CPU provider alone.
    """
    entries: list[ProviderEntry] = []
    for name in requested or (CPU,):
        if name not in available:
            continue
        if name == TENSORRT:
            entries.append((TENSORRT, tensorrt_options(model_path, precision, has_qdq=has_qdq)))
        elif name == CUDA:
            entries.append((CUDA, cuda_options()))
        else:
            entries.append(name)
    return entries or [CPU]


def provider_names(entries: list[ProviderEntry]) -> list[str]:
    return [entry if isinstance(entry, str) else entry[0] for entry in entries]


def graph_has_qdq(model_path: Path) -> bool:
    """Whether the ONNX file has QuantizeLinear/DequantizeLinear nodes, read without the ``onnx`` package.

    Looks for the op type as protobuf encodes a node's ``op_type`` field; an
    initializer or a name would need the same field tag and length to match.
    """
    try:
        data = model_path.read_bytes()
    except OSError:
        return False
    return any(pattern in data for pattern in _QDQ_OP_TYPES)


@dataclass(frozen=True)
class CacheState:
    path: Path
    hit: bool  # a TensorRT engine built from this very file was there before the session started


def prepare_cache(model_path: Path) -> CacheState | None:
    """Make ``<model>.trt-cache/``, clear engines built from another file; ``None`` when it cannot be written."""
    cache = cache_dir_for(model_path)
    fingerprint = hashlib.sha256(model_path.read_bytes()).hexdigest()
    try:
        cache.mkdir(exist_ok=True)
        recorded = (cache / FINGERPRINT_FILE).read_text().strip() if (cache / FINGERPRINT_FILE).is_file() else ""
        engines = [path for pattern in ENGINE_PATTERNS for path in cache.glob(pattern)]
        if engines and recorded != fingerprint:
            log.info("%s: TensorRT engines in %s were built from another file; rebuilding", model_path, cache)
            for path in engines:
                path.unlink()
            engines = []
        if recorded != fingerprint:
            write_text(cache / FINGERPRINT_FILE, fingerprint + "\n")
    except OSError as exc:
        log.warning(
            "%s: no TensorRT engine cache (%s cannot be written: %s); every start builds the engine",
            model_path,
            cache,
            exc,
        )
        return None
    return CacheState(cache, hit=bool(engines))


def without_cache(entries: list[ProviderEntry]) -> list[ProviderEntry]:
    """The same providers with TensorRT's caches switched off (a cache folder that cannot be written)."""
    result: list[ProviderEntry] = []
    for entry in entries:
        if isinstance(entry, tuple) and entry[0] == TENSORRT:
            options = {key: value for key, value in entry[1].items() if not key.endswith("_cache_path")}
            options.update(trt_engine_cache_enable="False", trt_timing_cache_enable="False")
            entry = (TENSORRT, options)
        result.append(entry)
    return result


def _flag(value: bool) -> str:
    return "True" if value else "False"
