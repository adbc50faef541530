"""A ``.tflite`` file as a graph: tensors, ops, quantization, MACs — read once, named once.

Reading goes through ``edgecls.adapters.tflite_reader`` (``struct`` over the FlatBuffer: no engine, no
TensorFlow), so ``edgecls info`` works on every engine a device may have: LiteRT 1.x and 2.x,
``tflite-runtime``, or none. Edits (the quantize step's I/O scale, the metadata writer) go through
LiteRT's flatbuffer object API (``ai_edge_litert.tools.flatbuffer_utils``), loaded on the first
edit: the workstation's LiteRT has it. ``edgecls info``, the quantize report and the metadata
writer all read a model through ``TFLiteGraph``, so an op is "float" or "integer" by one
definition (``Op.computes_in_float``, ``Op.computes_in_integer``) wherever it is counted.

>>> graph = TFLiteGraph.read("model_int8.tflite")  # doctest: +SKIP
>>> [op.op_type for op in graph.float_ops()]  # doctest: +SKIP
[]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.adapters.tflite_reader import RawModel, read_tflite
from edgecls.base.errors import ModelError

FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64")
QUANTIZED_TYPES = ("INT8", "UINT8", "INT16", "INT4")  # what a quantized kernel computes on (INT32 holds shapes, biases)


def _text(value: Any) -> str:
    """A flatbuffer string field (bytes from the object API) as text."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # LiteRT's type name: FLOAT32, INT8, UINT8, INT32, …
    scale: tuple[float, ...] = ()  # per tensor (one) or per channel; () when not quantized
    zero_point: tuple[int, ...] = ()
    constant: bool = False  # holds data in the file: a weight or a bias

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_TYPES

    @property
    def is_quantized_integer(self) -> bool:
        return self.dtype in QUANTIZED_TYPES


@dataclass(frozen=True)
class Op:
    op_type: str  # BuiltinOperator name, "CUSTOM" for a custom op
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    @property
    def computes_in_float(self) -> bool:
        """The one definition of a float op: custom (unknown kernel), or it reads or writes a float tensor.

        The QUANTIZE/DEQUANTIZE ops around float I/O or around layers kept float on
        purpose count: they are where float math happens. A full-integer graph has none.
        """
        return self.op_type == "CUSTOM" or any(tensor.is_float for tensor in self.inputs + self.outputs)

    @property
    def computes_in_integer(self) -> bool:
        """Not float, and it reads or writes a quantized (8/16-bit) tensor: an integer kernel.

        An op on INT32 tensors alone (shape arithmetic such as SHAPE → STRIDED_SLICE → PACK
        before a RESHAPE, in float graphs too) is neither float nor integer compute.
        """
        return not self.computes_in_float and any(t.is_quantized_integer for t in self.inputs + self.outputs)

    @property
    def node(self) -> str:
        """The first output tensor's name: what the converter's ``denylisted_nodes`` takes."""
        return self.outputs[0].name if self.outputs else ""


class TFLiteGraph:
    """Subgraph 0 of a TFLite model (what edgecls artifacts hold); LiteRT's object model is loaded for edits."""

    def __init__(self, data: bytes, raw: RawModel) -> None:
        self._data = data
        self._object_model: Any = None  # LiteRT's ModelT, on the first edit
        self.tensors = [
            Tensor(
                index=index,
                name=tensor.name,
                shape=tuple(int(d) for d in tensor.shape),
                dtype=tensor.dtype,
                scale=tuple(float(s) for s in tensor.scale),
                zero_point=tuple(int(z) for z in tensor.zero_point),
                constant=tensor.buffer < len(raw.buffer_sizes) and raw.buffer_sizes[tensor.buffer] > 0,
            )
            for index, tensor in enumerate(raw.tensors)
        ]
        self.ops = [
            Op(
                op_type=operator.op_type,
                inputs=tuple(self.tensors[i] for i in operator.inputs if i >= 0),
                outputs=tuple(self.tensors[i] for i in operator.outputs if i >= 0),
            )
            for operator in raw.operators
        ]
        self.inputs = [self.tensors[i] for i in raw.inputs if i >= 0]
        self.outputs = [self.tensors[i] for i in raw.outputs if i >= 0]

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "model") -> TFLiteGraph:
        """Parse TFLite bytes; a truncated or foreign file is a ``ModelError`` naming ``source``."""
        try:
            return cls(bytes(data), read_tflite(bytes(data)))
        except Exception as exc:  # struct.error, IndexError, ValueError … from a truncated or foreign file
            raise ModelError(f"{source}: not a valid TFLite model ({exc})") from exc

    @classmethod
    def read(cls, path: str | Path) -> TFLiteGraph:
        return cls.from_bytes(Path(path).read_bytes(), source=str(path))

    @property
    def model(self) -> Any:
        """LiteRT's object model (``ModelT``) of these bytes: what the edits below change."""
        if self._object_model is None:
            try:
                from ai_edge_litert.tools import flatbuffer_utils
            except ImportError as exc:
                raise ModelError(
                    "editing a .tflite needs LiteRT's flatbuffer tools (ai-edge-litert 2.x, workstation side): "
                    f'pip install "edgecls[train]" ({exc})'
                ) from exc
            self._object_model = flatbuffer_utils.read_model_from_bytearray(bytearray(self._data))
        return self._object_model

    # --- what the graph computes -------------------------------------------------

    def float_ops(self) -> list[Op]:
        return [op for op in self.ops if op.computes_in_float]

    def integer_ops(self) -> list[Op]:
        return [op for op in self.ops if op.computes_in_integer]

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.op_type] = counts.get(op.op_type, 0) + 1
        return counts

    def params(self) -> int:
        """Numbers stored in the file's constant tensors (weights, biases, shape constants)."""
        return sum(int(np.prod(tensor.shape)) for tensor in self.tensors if tensor.constant)

    def macs(self) -> int:
        """Multiply-accumulates of one image through the convolutions and dense layers."""
        return sum(_op_macs(op) for op in self.ops)

    def io_quantization(self) -> dict[str, Any]:
        """Input and output tensor type, scale and zero point (what the runtime's ``to_input`` relies on)."""
        return {"input": _quantization(self.inputs[0]), "output": _quantization(self.outputs[0])}

    # --- edits (through the object model), then bytes -------------------------------

    def set_quantization(self, tensor: Tensor, scale: float, zero_point: int) -> None:
        """Give ``tensor`` one (per-tensor) scale and zero point."""
        stored = self._stored_quantization(tensor)
        stored.scale, stored.zeroPoint = [float(scale)], [int(zero_point)]

    def set_range(self, tensor: Tensor, low: float, high: float) -> None:
        """Give a calibrated model's float ``tensor`` the statistics (min, max) the converter's quantize step
        makes its scale and zero point from, in place of the ones calibration recorded."""
        stored = self._stored_quantization(tensor)
        stored.min, stored.max = [float(low)], [float(high)]

    def _stored_quantization(self, tensor: Tensor) -> Any:
        """``tensor``'s quantization parameters in the object model, created empty where it has none."""
        stored = self.model.subgraphs[0].tensors[tensor.index]
        if stored.quantization is None:
            from ai_edge_litert import schema_py_generated as schema

            stored.quantization = schema.QuantizationParametersT()
        return stored.quantization

    def set_metadata(self, name: str, data: bytes) -> None:
        """Store ``data`` as the ``Model.metadata`` entry ``name`` (an existing entry of that name is replaced)."""
        from ai_edge_litert import schema_py_generated as schema

        model = self.model
        model.metadata = [entry for entry in (model.metadata or []) if _text(entry.name) != name]
        buffer = schema.BufferT()
        buffer.data = list(data)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)

    def to_bytes(self) -> bytes:
        """The model's bytes, with the edits made (the file as read when there were none)."""
        if self._object_model is None:
            return self._data
        from ai_edge_litert.tools import flatbuffer_utils

        return bytes(flatbuffer_utils.convert_object_to_bytearray(self._object_model))


def _quantization(tensor: Tensor) -> dict[str, Any]:
    return {
        "dtype": tensor.dtype.lower(),
        "scale": tensor.scale[0] if tensor.scale else 0.0,
        "zero_point": tensor.zero_point[0] if tensor.zero_point else 0,
    }


def _op_macs(op: Op) -> int:
    if not op.outputs or len(op.inputs) < 2:
        return 0
    out_elements = int(np.prod(op.outputs[0].shape))
    weight = op.inputs[1].shape
    if len(weight) != (4 if op.op_type in ("CONV_2D", "DEPTHWISE_CONV_2D") else 2):
        return 0  # not the weight layout below (or an op that is neither)
    if op.op_type == "CONV_2D":  # weights (Cout, kh, kw, Cin)
        return out_elements * weight[1] * weight[2] * weight[3]
    if op.op_type == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, C)
        return out_elements * weight[1] * weight[2]
    if op.op_type == "FULLY_CONNECTED":  # weights (units, in)
        return out_elements * weight[1]
    return 0


# --- shorthands over bytes -------------------------------------------------------------


def op_types(model_bytes: bytes) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """``(op type, input tensor types, output tensor types)`` for every op of subgraph 0."""
    return [
        (op.op_type, tuple(t.dtype for t in op.inputs), tuple(t.dtype for t in op.outputs))
        for op in TFLiteGraph.from_bytes(model_bytes).ops
    ]


def float_ops(model_bytes: bytes) -> list[str]:
    """The types of the ops that compute in float (``Op.computes_in_float``): empty for a full-integer graph."""
    return [op.op_type for op in TFLiteGraph.from_bytes(model_bytes).float_ops()]


def io_quantization(model_bytes: bytes) -> dict[str, Any]:
    """``TFLiteGraph.io_quantization`` of TFLite bytes."""
    return TFLiteGraph.from_bytes(model_bytes).io_quantization()
