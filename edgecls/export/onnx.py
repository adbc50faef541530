"""The ONNX writer: Keras' ``model.export(format="onnx")`` (tf2onnx), then metadata."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

from edgecls.base.fileio import atomic_path
from edgecls.export.metadata import embed_onnx
from edgecls.runtime.metadata import ModelInfo

OPSET = 17  # ONNX Runtime ≥ 1.14 and TensorRT 8.5 (JetPack 5) both run it


def convert_onnx(model):
    """Convert a Keras model to an ONNX ``ModelProto`` with a dynamic batch dimension."""
    import onnx

    from edgecls.adapters.keras_graph import ensure_called

    model = _normalization_as_rescaling(model)
    ensure_called(model)  # Keras' ONNX exporter traces a model only after one call; a freshly loaded one has had none
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(sys.stderr):
        target = Path(scratch) / "model.onnx"
        model.export(str(target), format="onnx", opset_version=OPSET, verbose=False)
        return onnx.load(str(target))


def _normalization_as_rescaling(model):
    """``model`` with each ``Normalization`` layer written as the per-channel ``Rescaling`` it computes.

    A Normalization computes with tensors it derives from its weights (``finalize_state``), not with
    the weights; tf2onnx then leaves those tensors as graph inputs nobody feeds (EfficientNet's stem:
    "Required inputs ['…/normalization/Sub/y:0', …] are missing"). (x - mean) / max(sqrt(var), eps)
    is x * scale + offset, which exports as a plain Mul/Add. The export's parity check compares the result.
    """
    import keras
    import numpy as np

    from edgecls.adapters.keras_io import model_from_config

    norms = {layer.name: layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)}
    if not norms or any(layer.invert for layer in norms.values()):
        return model
    config = model.get_config()
    for layer_data in config["layers"]:
        layer = norms.get(layer_data["name"])
        if layer is None:
            continue
        mean = np.asarray(layer.mean, dtype=np.float64).reshape(-1)
        std = np.maximum(np.sqrt(np.asarray(layer.variance, dtype=np.float64).reshape(-1)), keras.config.epsilon())
        layer_data["class_name"], layer_data["module"], layer_data["registered_name"] = (
            "Rescaling",
            "keras.layers",
            None,
        )
        layer_data["config"] = {
            "name": layer.name,
            "trainable": False,
            "dtype": layer_data["config"].get("dtype"),
            "scale": (1.0 / std).tolist(),
            "offset": (-mean / std).tolist(),
        }
        layer_data.pop("build_config", None)
    rewritten = model_from_config(model, config)
    for layer in rewritten.layers:
        if layer.name not in norms and layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return rewritten


def write_onnx(model, path: str | Path, info: ModelInfo) -> Path:
    """Convert ``model`` and write it atomically to ``path`` with ``info`` embedded."""
    return write_onnx_proto(convert_onnx(model), path, info)


def write_onnx_proto(proto, path: str | Path, info: ModelInfo) -> Path:
    import onnx

    with atomic_path(path) as tmp:
        onnx.save(embed_onnx(proto, info), str(tmp))
    return Path(path)
