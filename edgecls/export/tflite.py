"""The TFLite (LiteRT) writer: Keras' ``model.export(format="litert")``, then metadata."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

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


def fp16_options() -> dict[str, Any]:
    """Converter options for FP16 weights (GPU delegates, Jetson): half the size, float I/O."""
    import tensorflow as tf

    return {"optimizations": [tf.lite.Optimize.DEFAULT], "target_spec": {"supported_types": [tf.float16]}}
