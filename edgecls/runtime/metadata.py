"""What an artifact carries about itself: labels, input contract, provenance.

The same JSON document travels in every format:

- ``.tflite``: a TFLite ``Model.metadata`` entry named ``edgecls`` whose buffer
  holds the UTF-8 JSON (the flatbuffer's own metadata mechanism);
- ``.onnx``: the ``metadata_props`` entry ``edgecls``;
- ``.keras``: a member ``edgecls.json`` inside the zip archive.

Reading never needs TensorFlow: the TFLite reader below walks the flatbuffer
with ``struct`` (the few fields it needs), so it works with LiteRT,
``tflite_runtime`` or no engine at all.
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecls.base.errors import ModelError

METADATA_KEY = "edgecls"
SCHEMA = "edgecls/1"


@dataclass(frozen=True)
class ModelInfo:
    """The preprocessing contract and provenance of a model.

    The model takes pixels 0..255 (normalisation is inside the graph), NHWC,
    ``channels`` of them in ``channel_order`` (``RGB`` or ``GRAY``).
    """

    labels: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width) in pixels
    channels: int
    channel_order: str = "RGB"
    pixel_range: tuple[int, int] = (0, 255)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        document = asdict(self)
        document["schema"] = SCHEMA
        return json.dumps(document, sort_keys=True)

    @classmethod
    def from_dict(cls, document: dict[str, Any], *, source: str = "") -> ModelInfo:
        try:
            return cls(
                labels=tuple(str(label) for label in document["labels"]),
                input_size=(int(document["input_size"][0]), int(document["input_size"][1])),
                channels=int(document["channels"]),
                channel_order=str(document.get("channel_order", "RGB")),
                pixel_range=tuple(document.get("pixel_range", (0, 255))),
                provenance=dict(document.get("provenance", {})),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(
                f"{source}: edgecls metadata is malformed ({exc!r}); re-export the model with edgecls"
            ) from exc

    def with_provenance(self, **updates: Any) -> ModelInfo:
        merged = {**self.provenance, **updates}
        return ModelInfo(self.labels, self.input_size, self.channels, self.channel_order, self.pixel_range, merged)


def read_model_info(path: str | Path) -> ModelInfo | None:
    """Read the edgecls metadata of a ``.tflite``, ``.onnx`` or ``.keras`` file.

    Returns ``None`` when the file carries none (a model not made by edgecls).

    >>> info = read_model_info("model.tflite")  # doctest: +SKIP
    >>> info.labels[:3]  # doctest: +SKIP
    ('0', '1', '2')
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    suffix = path.suffix.lower()
    raw: bytes | str | None
    if suffix == ".tflite":
        try:
            raw = tflite_metadata(path.read_bytes()).get(METADATA_KEY)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from exc
    elif suffix == ".onnx":
        raw = _onnx_metadata(path)
    elif suffix == ".keras":
        raw = _keras_metadata(path)
    else:
        raise ModelError(f"{path}: unknown model type {suffix!r}; expected .keras, .tflite or .onnx")
    if raw is None:
        return None
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: edgecls metadata is not valid JSON ({exc})") from exc
    return ModelInfo.from_dict(document, source=str(path))


# --- TFLite: a minimal flatbuffer walk over Model.metadata -------------------
# Field indices from tensorflow/compiler/mlir/lite/schema/schema.fbs:
# Model: version 0, operator_codes 1, subgraphs 2, description 3, buffers 4,
# metadata_buffer 5, metadata 6. Metadata: name 0, buffer 1.
# Buffer: data 0, offset 1, size 2 (offset/size for buffers stored after the
# flatbuffer in files over 2 GB).


def tflite_metadata(buffer: bytes) -> dict[str, bytes]:
    """Map each ``Model.metadata`` name to its buffer's bytes."""
    try:
        if len(buffer) < 8 or buffer[4:8] != b"TFL3":
            raise ValueError("no TFL3 identifier")
        model = _u32(buffer, 0)  # root table position
        buffers_vector = _field_vector(buffer, model, 4)
        entries: dict[str, bytes] = {}
        for entry in _field_vector(buffer, model, 6) or []:
            name_pos = _field_position(buffer, entry, 0)
            index_pos = _field_position(buffer, entry, 1)
            if name_pos is None or index_pos is None or buffers_vector is None:
                continue
            name = _string(buffer, name_pos)
            entries[name] = _buffer_bytes(buffer, buffers_vector[_u32(buffer, index_pos)])
        return entries
    except (ValueError, IndexError, struct.error) as exc:
        raise ModelError(f"not a valid TFLite flatbuffer ({exc})") from exc


def _u32(buffer: bytes, pos: int) -> int:
    return int(struct.unpack_from("<I", buffer, pos)[0])


def _field_position(buffer: bytes, table: int, index: int) -> int | None:
    vtable = table - struct.unpack_from("<i", buffer, table)[0]
    vtable_size = struct.unpack_from("<H", buffer, vtable)[0]
    slot = 4 + 2 * index
    if slot >= vtable_size:
        return None
    offset = struct.unpack_from("<H", buffer, vtable + slot)[0]
    return table + offset if offset else None


def _field_vector(buffer: bytes, table: int, index: int) -> list[int] | None:
    """Positions of the tables in a vector-of-tables field."""
    pos = _field_position(buffer, table, index)
    if pos is None:
        return None
    vector = pos + _u32(buffer, pos)
    length = _u32(buffer, vector)
    return [vector + 4 + 4 * i + _u32(buffer, vector + 4 + 4 * i) for i in range(length)]


def _string(buffer: bytes, pos: int) -> str:
    start = pos + _u32(buffer, pos)
    length = _u32(buffer, start)
    return buffer[start + 4 : start + 4 + length].decode("utf-8")


def _buffer_bytes(buffer: bytes, table: int) -> bytes:
    data_pos = _field_position(buffer, table, 0)
    if data_pos is not None:
        start = data_pos + _u32(buffer, data_pos)
        return bytes(buffer[start + 4 : start + 4 + _u32(buffer, start)])
    offset_pos, size_pos = _field_position(buffer, table, 1), _field_position(buffer, table, 2)
    if offset_pos is not None and size_pos is not None:
        offset = struct.unpack_from("<Q", buffer, offset_pos)[0]
        size = struct.unpack_from("<Q", buffer, size_pos)[0]
        return bytes(buffer[offset : offset + size])
    return b""


def _onnx_metadata(path: Path) -> str | None:
    try:
        import onnx  # workstation side: cheap, no graph execution

        model = onnx.load(str(path), load_external_data=False)
        return next((prop.value for prop in model.metadata_props if prop.key == METADATA_KEY), None)
    except ImportError:
        pass
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"{path}: not a valid ONNX model ({exc})") from exc
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError(f"{path}: reading ONNX metadata needs onnx or onnxruntime: pip install onnxruntime") from exc
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{path}: not a valid ONNX model ({exc})") from exc
    value: str | None = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return value


def _keras_metadata(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            if f"{METADATA_KEY}.json" not in archive.namelist():
                return None
            return archive.read(f"{METADATA_KEY}.json").decode("utf-8")
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{path}: not a Keras 3 .keras archive ({exc})") from exc
