"""Inference engines, one per artifact type, behind one small interface.

Registry keyed by file suffix (``list_engines()``); each engine loads its
framework lazily so that importing the runtime costs nothing until used.
Engines take and return numpy arrays and never import TensorFlow.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from edgecls.base.errors import ConfigError, ModelError, RuntimeUnavailableError
from edgecls.runtime import onnx_int8, tensorrt
from edgecls.runtime.litert import delegate_provider, ops_outside_delegate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0  # quantisation: real = scale * (q - zero_point); 0 = not quantised
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)


class Engine:
    """One loaded model. ``run`` is serialised by a lock: safe to share across threads."""

    name: str = ""
    version: str = ""
    provider: str = ""
    threads: int = 0
    input: TensorSpec
    output: TensorSpec

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run on a batch already in the input tensor's dtype; returns float32 scores."""
        with self._lock:
            return self._dequantize(self._run(batch))

    def invoke_raw(self, batch: np.ndarray) -> np.ndarray:
        """The engine call alone, no dequantisation: what a raw-interpreter loop costs."""
        with self._lock:
            return self._run(batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _dequantize(self, raw: np.ndarray) -> np.ndarray:
        if self.output.quantized:
            return (raw.astype(np.float32) - self.output.zero_point) * self.output.scale
        return raw.astype(np.float32, copy=False)


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class LiteRTEngine(Engine):
    """``.tflite`` through LiteRT (``ai_edge_litert``), else ``tflite_runtime``."""

    def __init__(
        self, path: Path, *, threads: int | None = None, providers: tuple[str, ...] = (), kernels: str = "default"
    ) -> None:
        super().__init__()
        interpreter_class, self.name, self.version = _load_tflite_interpreter()
        self.threads = threads or _default_threads()
        options = _kernel_options(interpreter_class, kernels)
        try:
            self._interpreter = interpreter_class(model_path=str(path), num_threads=self.threads, **options)
            self._interpreter.allocate_tensors()
        except ValueError as exc:
            raise ModelError(f"{path}: LiteRT cannot load this model ({exc})") from exc
        except (SystemError, AttributeError, ImportError) as exc:
            # A LiteRT/tflite_runtime wheel built against NumPy 1 imports under NumPy 2 but fails here
            # (tflite-runtime 2.14: SystemError; ai-edge-litert 1.0: "_ARRAY_API not found").
            raise RuntimeUnavailableError(
                f"{self.name} {self.version} cannot create an interpreter under NumPy {np.__version__} ({exc}); "
                'install ai-edge-litert>=1.1.1, or pip install "numpy<2" for this engine'
            ) from exc
        self.provider = "CPU (reference kernels)" if kernels == "reference" else delegate_provider(self._interpreter)
        self.input = _tflite_spec(self._interpreter.get_input_details()[0])
        self.output = _tflite_spec(self._interpreter.get_output_details()[0])
        self._input_index = self._interpreter.get_input_details()[0]["index"]
        self._output_index = self._interpreter.get_output_details()[0]["index"]
        self._batch = self.input.shape[0]

    def delegation(self) -> tuple[int, dict[str, int]]:
        """XNNPACK's partitions of the graph and the ops it left to the built-in kernels, by type (0, {}: none)."""
        return ops_outside_delegate(self._interpreter)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] != self._batch:
            self._interpreter.resize_tensor_input(self._input_index, list(batch.shape))
            self._interpreter.allocate_tensors()
            self._batch = batch.shape[0]
        self._interpreter.set_tensor(self._input_index, batch)
        self._interpreter.invoke()
        return cast(np.ndarray, self._interpreter.get_tensor(self._output_index))


# LiteRT's kernel families (``kernels=``): "default" is XNNPACK where it takes the graph (x86, a Pi), else the
# built-in kernels; "builtin" is the built-in (optimised) kernels alone, what runs where XNNPACK cannot; "reference"
# is the plain C++ kernels, the same integers on every CPU. Their INT8 requantization rounds differently, so one
# artifact's top-1 can differ between them on close calls; comparing them tells that from a conversion error.
LITERT_KERNELS = {"default": None, "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "reference": "BUILTIN_REF"}


def _kernel_options(interpreter_class: Callable[..., Any], kernels: str) -> dict[str, Any]:
    """The interpreter's keyword for a kernel family of ``LITERT_KERNELS``."""
    if kernels not in LITERT_KERNELS:
        raise ConfigError(f"kernels={kernels!r}: LiteRT's kernel families are {', '.join(LITERT_KERNELS)}")
    if LITERT_KERNELS[kernels] is None:
        return {}
    import importlib

    resolver = importlib.import_module(interpreter_class.__module__).OpResolverType  # litert's or tflite_runtime's
    return {"experimental_op_resolver_type": getattr(resolver, cast(str, LITERT_KERNELS[kernels]))}


def _load_tflite_interpreter() -> tuple[Callable[..., Any], str, str]:
    try:
        import importlib.metadata as metadata

        from ai_edge_litert import interpreter as litert

        return litert.Interpreter, "litert", metadata.version("ai-edge-litert")
    except ImportError:
        pass
    try:
        import tflite_runtime  # NumPy 1 devices, Pi OS 32-bit
        from tflite_runtime import interpreter as tflite_interpreter

        # The version is the package's (the interpreter module has none: it read "?" in the Pi OS 32-bit box).
        return tflite_interpreter.Interpreter, "tflite_runtime", getattr(tflite_runtime, "__version__", "?")
    except ImportError as exc:
        raise RuntimeUnavailableError(
            "no TFLite engine installed: pip install ai-edge-litert (or tflite-runtime on NumPy 1 systems)"
        ) from exc


def _tflite_spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        detail["name"], tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]), float(scale), int(zero_point)
    )


class OnnxEngine(Engine):
    """``.onnx`` through ONNX Runtime, with the requested execution providers.

    TensorRT and CUDA get their options from ``edgecls.runtime.tensorrt``
    (precision, engine cache beside the model). ``load_seconds`` is the session
    creation wall time: with TensorRT, an engine build on a first start
    (``cache_hit`` False) and a deserialisation on a cached one (True);
    ``cache_hit`` is None when no TensorRT cache is in use.
    """

    load_seconds: float = 0.0
    cache_hit: bool | None = None
    int8_kernels: onnx_int8.KernelChoice | None = None  # a Q/DQ graph on the CPU: which INT8 kernels run it, and why

    def __init__(
        self, path: Path, *, threads: int | None = None, providers: tuple[str, ...] = (), precision: str | None = None
    ) -> None:
        super().__init__()
        try:
            import onnxruntime
        except ImportError as exc:
            raise RuntimeUnavailableError(
                "no ONNX engine installed: pip install onnxruntime (onnxruntime-gpu on Jetson)"
            ) from exc
        self.name, self.version = "onnxruntime", onnxruntime.__version__
        self.threads = threads or _default_threads()
        wanted = self._providers(path, providers, onnxruntime.get_available_providers(), precision)
        started = time.perf_counter()
        self.int8_kernels = None
        if _first_provider(wanted) == "CPUExecutionProvider":
            self._session, self.int8_kernels = _cpu_session(onnxruntime, path, self.threads, wanted)
        else:
            self._session = _session(onnxruntime, path, self.threads, wanted, None)
        self.load_seconds = time.perf_counter() - started
        # what is actually used, not just requested; on a Q/DQ graph also which INT8 kernels and why
        self.provider = self._session.get_providers()[0]
        if self.int8_kernels is not None:
            self.provider += f" (INT8 {self.int8_kernels.kernels} kernels)"
        model_input, model_output = self._session.get_inputs()[0], self._session.get_outputs()[0]
        self.input = TensorSpec(
            model_input.name, _onnx_input_shape(model_input.shape, path), _onnx_dtype(model_input.type)
        )
        self.output = TensorSpec(
            model_output.name,
            tuple(dim if isinstance(dim, int) else 1 for dim in model_output.shape),
            _onnx_dtype(model_output.type),
        )
        self.custom_metadata = self._session.get_modelmeta().custom_metadata_map
        self._one_at_a_time = model_input.shape[0] == 1  # a graph exported for batch 1 only

    def _providers(
        self, path: Path, requested: tuple[str, ...], available: list[str], precision: str | None
    ) -> list[tensorrt.ProviderEntry]:
        """What ``InferenceSession`` gets: names, TensorRT/CUDA as ``(name, options)``; sets ``cache_hit``."""
        use_tensorrt = tensorrt.TENSORRT in requested and tensorrt.TENSORRT in available
        has_qdq = use_tensorrt and tensorrt.graph_has_qdq(path)
        # No precision asked for: the graph's own (INT8 for a Q/DQ graph, else FP32 as exported).
        wanted = tensorrt.provider_list(
            requested, available, path, precision=precision or ("int8" if has_qdq else "fp32"), has_qdq=has_qdq
        )
        if use_tensorrt:
            cache = tensorrt.prepare_cache(path)
            self.cache_hit = cache.hit if cache is not None else None
            if cache is None:
                wanted = tensorrt.without_cache(wanted)
        return wanted

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._one_at_a_time and batch.shape[0] != 1:
            return np.concatenate(
                [
                    self._session.run([self.output.name], {self.input.name: batch[i : i + 1]})[0]
                    for i in range(batch.shape[0])
                ]
            )
        return cast(np.ndarray, self._session.run([self.output.name], {self.input.name: batch})[0])


def _session_options(onnxruntime: Any, threads: int, kernels: str | None) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if kernels == onnx_int8.SIGNED:  # S8S8 kernels for a Q/DQ graph (ARM's default); see edgecls.runtime.onnx_int8
        options.add_session_config_entry("session.qdqisint8allowed", "1")
    elif kernels == onnx_int8.UNSIGNED:
        options.add_session_config_entry("session.qdqisint8allowed", "0")
    return options


def _session(onnxruntime: Any, path: Path, threads: int, wanted: list[Any], kernels: str | None) -> Any:
    try:
        return onnxruntime.InferenceSession(
            str(path), sess_options=_session_options(onnxruntime, threads, kernels), providers=wanted
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"{path}: ONNX Runtime cannot load this model ({exc})") from exc


def _first_provider(wanted: list[Any]) -> str:
    first = wanted[0] if wanted else "CPUExecutionProvider"
    return first[0] if isinstance(first, tuple) else str(first)


def _cpu_session(
    onnxruntime: Any, path: Path, threads: int, wanted: list[Any]
) -> tuple[Any, onnx_int8.KernelChoice | None]:
    """A CPU session; for a Q/DQ INT8 graph on the INT8 kernels ``onnx_int8.choose_kernels`` picks (with why)."""
    try:
        weights = onnx_int8.qdq_weights(path)
    except (ValueError, IndexError) as exc:  # a file the walk does not follow: ONNX Runtime will say what is wrong
        log.debug("%s: INT8 weights not read (%s)", path, exc)
        weights = onnx_int8.QdqWeights(quantized=True, int8_weights=0, max_abs=-1)
    if not weights.quantized:
        return _session(onnxruntime, path, threads, wanted, None), None
    cpu = onnx_int8.this_cpu()
    choice = onnx_int8.forced_kernels() or onnx_int8.fixed_kernels(cpu, full_range_weights=weights.full_range)
    sessions: dict[str, Any] = {}
    if choice is None:  # both paths are correct here: the faster one, measured once per model, CPU and threads
        key = onnx_int8.cache_key(path, cpu, onnxruntime.__version__, threads)
        choice = onnx_int8.cached_choice(key)
        if choice is None:
            for kernels in (onnx_int8.SIGNED, onnx_int8.UNSIGNED):
                sessions[kernels] = _session(onnxruntime, path, threads, wanted, kernels)
            signed_ms, unsigned_ms = onnx_int8.time_interleaved(
                _one_run(sessions[onnx_int8.SIGNED]), _one_run(sessions[onnx_int8.UNSIGNED])
            )
            choice = onnx_int8.measured_kernels(cpu, signed_ms, unsigned_ms)
            onnx_int8.store_choice(key, choice)
    session = sessions.get(choice.kernels) or _session(onnxruntime, path, threads, wanted, choice.kernels)
    return session, choice


def _one_run(session: Any) -> Callable[[], object]:
    """One inference on zeros of the session's input, for timing."""
    model_input = session.get_inputs()[0]
    shape = tuple(dim if isinstance(dim, int) else 1 for dim in model_input.shape)
    feed = {model_input.name: np.zeros(shape, _onnx_dtype(model_input.type))}
    output = session.get_outputs()[0].name
    return lambda: session.run([output], feed)


def _onnx_input_shape(shape: list[Any], path: Path) -> tuple[int, ...]:
    """The input shape with a dynamic batch as 1.

    A dynamic height, width or channel count is an error (frames are resized to a fixed size).
    """
    if any(not isinstance(dim, int) for dim in shape[1:]):
        raise ModelError(
            f"{path}: the input shape {list(shape)} is dynamic beyond the batch; the runtime needs a fixed image size "
            "(export with a fixed input size, e.g. edgecls export, or tf2onnx/torch.onnx with a concrete shape)"
        )
    return tuple(dim if isinstance(dim, int) else 1 for dim in shape)


def _onnx_dtype(type_name: str) -> np.dtype:
    names = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(uint8)": np.uint8,
        "tensor(int8)": np.int8,
    }
    if type_name not in names:
        raise ModelError(f"unsupported ONNX tensor type {type_name}")
    return np.dtype(names[type_name])


ENGINES: dict[str, Callable[..., Engine]] = {".tflite": LiteRTEngine, ".onnx": OnnxEngine}


def list_engines() -> list[str]:
    return sorted(ENGINES)


def load_engine(
    path: str | Path,
    *,
    threads: int | None = None,
    providers: tuple[str, ...] = (),
    precision: str | None = None,
    kernels: str = "default",
) -> Engine:
    """Open ``path`` with the engine registered for its suffix.

    ``precision`` (fp32, fp16, int8: a target's first) is what TensorRT builds an
    ``.onnx`` for; a ``.tflite`` runs at the precision of its own graph.
    ``kernels`` (a ``.tflite``'s): which of LiteRT's kernel families runs it (``LITERT_KERNELS``).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    engine_class = ENGINES.get(path.suffix.lower())
    if engine_class is None:
        raise ModelError(f"{path}: the runtime runs {', '.join(list_engines())} files, not {path.suffix or 'this'}")
    if engine_class is OnnxEngine:
        if kernels != "default":
            raise ConfigError(f"kernels={kernels!r} chooses LiteRT's kernels; {path} runs on ONNX Runtime")
        return OnnxEngine(path, threads=threads, providers=providers, precision=precision)
    return engine_class(path, threads=threads, providers=providers, kernels=kernels)
