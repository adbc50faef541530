"""The TFLite (LiteRT) writer: Keras' ``model.export(format="litert")``, then metadata."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.base.fileio import write_bytes
from edgecls.export.metadata import embed_tflite
from edgecls.runtime.metadata import ModelInfo


def convert_tflite(model, **converter_options: Any) -> bytes:
    """Convert a Keras model to TFLite bytes through Keras' LiteRT exporter.

    ``converter_options`` are set as attributes of the LiteRT converter
    (``optimizations``, ``representative_dataset``, ``inference_input_type``,
    ``target_spec={"supported_types": [...]}``, …).
    """
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(sys.stderr):
        target = Path(scratch) / "model.tflite"
        model.export(str(target), format="litert", verbose=False, **converter_options)
        return target.read_bytes()


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
