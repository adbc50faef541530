"""The ONNX writer: Keras' ``model.export(format="onnx")`` (tf2onnx), then metadata."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

from edgecls.export.metadata import embed_onnx
from edgecls.fileio import atomic_path
from edgecls.runtime.metadata import ModelInfo

OPSET = 17  # ONNX Runtime ≥ 1.14 and TensorRT 8.5 (JetPack 5) both run it


def convert_onnx(model):
    """Convert a Keras model to an ONNX ``ModelProto`` with a dynamic batch dimension."""
    import onnx

    from edgecls.keras_graph import ensure_called

    ensure_called(model)  # Keras' ONNX exporter traces a model only after one call; a freshly loaded one has had none
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(sys.stderr):
        target = Path(scratch) / "model.onnx"
        model.export(str(target), format="onnx", opset_version=OPSET, verbose=False)
        return onnx.load(str(target))


def write_onnx(model, path: str | Path, info: ModelInfo) -> Path:
    """Convert ``model`` and write it atomically to ``path`` with ``info`` embedded."""
    return write_onnx_proto(convert_onnx(model), path, info)


def write_onnx_proto(proto, path: str | Path, info: ModelInfo) -> Path:
    import onnx

    with atomic_path(path) as tmp:
        onnx.save(embed_onnx(proto, info), str(tmp))
    return Path(path)
