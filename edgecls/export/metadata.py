"""Writing edgecls metadata into TFLite and ONNX artifacts (workstation side).

The reading side is ``edgecls.runtime.metadata`` and needs no framework.
"""

from __future__ import annotations

from pathlib import Path

from edgecls.runtime.metadata import METADATA_KEY, ModelInfo


def embed_tflite(model_bytes: bytes, info: ModelInfo) -> bytes:
    """Return ``model_bytes`` with a ``Model.metadata`` entry ``edgecls`` holding ``info``.

    Uses LiteRT's flatbuffer object API; an existing ``edgecls`` entry is replaced.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    model.metadata = [entry for entry in (model.metadata or []) if _name(entry) != METADATA_KEY]
    buffer = schema.BufferT()
    buffer.data = list(info.to_json().encode("utf-8"))
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name(entry) -> str:
    name = entry.name
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)


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
