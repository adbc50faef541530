"""Writing edgecls metadata into TFLite and ONNX artifacts (workstation side).

The reading side is ``edgecls.runtime.metadata`` and needs no framework.
"""

from __future__ import annotations

from pathlib import Path

from edgecls.runtime.metadata import METADATA_KEY, ModelInfo


def embed_tflite(model_bytes: bytes, info: ModelInfo) -> bytes:
    """Return ``model_bytes`` with a ``Model.metadata`` entry ``edgecls`` holding ``info``.

    Uses LiteRT's flatbuffer object API (``edgecls.adapters.tflite_graph``); an existing ``edgecls`` entry is replaced.
    """
    from edgecls.adapters.tflite_graph import TFLiteGraph

    graph = TFLiteGraph.from_bytes(model_bytes)
    graph.set_metadata(METADATA_KEY, info.to_json().encode("utf-8"))
    return graph.to_bytes()


def embed_onnx(model, info: ModelInfo):
    """Set the ``edgecls`` entry of an ONNX ``ModelProto``'s ``metadata_props`` (in place)."""
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    prop = model.metadata_props.add()
    prop.key, prop.value = METADATA_KEY, info.to_json()
    return model


def embed_onnx_file(path: str | Path, info: ModelInfo) -> None:
    """Embed ``info`` into the ONNX file at ``path`` (rewrites the file in place; call on a temp file)."""
    import onnx

    model = onnx.load(str(path))
    onnx.save(embed_onnx(model, info), str(path))
