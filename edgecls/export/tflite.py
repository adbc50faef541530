"""The TFLite (LiteRT) writer: Keras' ``model.export(format="litert")``, then metadata."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.adapters import litert_converter
from edgecls.base.fileio import write_bytes
from edgecls.export.metadata import embed_tflite
from edgecls.runtime.metadata import ModelInfo


class LiteRTSource:
    """A Keras model for the LiteRT converter: the SavedModel Keras' exporter converts from, written on the first
    conversion and converted again from the same folder by each later one.

    Writing it is most of a conversion's time (measured: 15 s of the 29 s a MobileNetV2 α 0.35 took, loaded host);
    a model converted several times (``edgecls quantize``: FP32 for its size, INT8, calibration, the PTQ baseline
    of ``--qat``) writes it once. The bytes are those of ``model.export(format="litert", **options)``. ``tracing``:
    a context the model is traced in (``quantize.fake_quant.converter_ops`` for a QAT model). Without ``folder``
    the SavedModel lives in a temporary folder until ``close()`` (or the end of a ``with`` block).

    >>> with LiteRTSource(model) as source:  # doctest: +SKIP
    ...     fp32, fp16 = source.convert(), source.convert(**fp16_options())
    """

    def __init__(
        self,
        model,
        *,
        folder: str | Path | None = None,
        tracing: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        self.model, self.tracing = model, tracing
        self._scratch = None if folder is not None else tempfile.TemporaryDirectory(prefix="litert-")
        self.folder = Path(folder) if folder is not None else Path(self._scratch.name) / "saved_model"
        self._written = False

    def saved_model(self) -> Path:
        """The SavedModel folder, written on the first call."""
        if not self._written:
            with self.tracing(), contextlib.redirect_stdout(sys.stderr):
                litert_converter.write_saved_model(self.model, self.folder)
            self._written = True
        return self.folder

    def convert(self, **converter_options: Any) -> bytes:
        """TFLite bytes, as Keras' ``model.export(format="litert", **converter_options)`` writes them.

        ``converter_options`` are set as attributes of the LiteRT converter (``optimizations``,
        ``representative_dataset``, ``inference_input_type``, ``target_spec={"supported_types": [...]}``, …).
        """
        folder = self.saved_model()
        with contextlib.redirect_stdout(sys.stderr):
            return litert_converter.convert_saved_model(folder, **converter_options)

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()

    def __enter__(self) -> LiteRTSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def litert_source(model, **options: Any):
    """``model``'s ``LiteRTSource``: ``model`` itself when it is one (its owner closes it), else a temporary one."""
    if isinstance(model, LiteRTSource):
        yield model
        return
    with LiteRTSource(model, **options) as source:
        yield source


def convert_tflite(model, **converter_options: Any) -> bytes:
    """Convert a Keras model (or a ``LiteRTSource``) to TFLite bytes through Keras' LiteRT exporter's path
    (``LiteRTSource.convert``: the options are the converter's attributes)."""
    with litert_source(model) as source:
        return source.convert(**converter_options)


def write_tflite(model, path: str | Path, info: ModelInfo, **converter_options: Any) -> Path:
    """Convert ``model`` and write it atomically to ``path`` with ``info`` embedded."""
    return write_bytes(path, embed_tflite(convert_tflite(model, **converter_options), info))


def write_tflite_bytes(model_bytes: bytes, path: str | Path, info: ModelInfo) -> Path:
    """Write already-converted TFLite bytes atomically with ``info`` embedded."""
    return write_bytes(path, embed_tflite(model_bytes, info))


def representative_images(images: np.ndarray) -> Callable[[], Any]:
    """The converter's representative dataset over uint8 (N, H, W, C) pixels: one image at a time, as float 0..255."""

    def generate():
        for index in range(len(images)):
            yield [images[index : index + 1].astype(np.float32)]

    return generate


def int8_options(images: np.ndarray, *, io: str = "int8", per_channel: bool = True) -> dict[str, Any]:
    """LiteRT converter attributes for a full-integer model calibrated on ``images`` (for ``convert_tflite``)."""
    import tensorflow as tf

    from edgecls.adapters import litert_converter

    options: dict[str, Any] = {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": representative_images(images),
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        "inference_input_type": litert_converter.tf_type(io),
        "inference_output_type": litert_converter.tf_type(io),
    }
    if not per_channel:
        options.update(litert_converter.per_tensor_options())
    return options


def fp16_options() -> dict[str, Any]:
    """Converter options for FP16 weights (GPU delegates, Jetson): half the size, float I/O."""
    import tensorflow as tf

    return {"optimizations": [tf.lite.Optimize.DEFAULT], "target_spec": {"supported_types": [tf.float16]}}
