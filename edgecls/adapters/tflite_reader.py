"""The fields of a ``.tflite`` file that edgecls reads, walked with ``struct``: no engine, no TensorFlow.

A ``.tflite`` is a FlatBuffer of LiteRT's schema (``tensorflow/compiler/mlir/lite/schema/schema.fbs``).
LiteRT 1.x ships no ``tools.flatbuffer_utils`` (1.4.0's ``tools`` package lacks it) and ``tflite-runtime``
no schema either, so ``edgecls info`` on a device reads the file here: subgraph 0's tensors (shape, type,
quantization, whether they hold data), its operators (type, inputs, outputs) and the model's buffers.
Writing stays with LiteRT's object API on the workstation (``edgecls.adapters.tflite_graph``).

>>> model = read_tflite(Path("model_int8.tflite").read_bytes())  # doctest: +SKIP
>>> model.operators[0].op_type, model.tensors[0].dtype  # doctest: +SKIP
('CONV_2D', 'INT8')
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Field indices of schema.fbs tables (a table's fields are numbered in declaration order).
MODEL_OPERATOR_CODES, MODEL_SUBGRAPHS, MODEL_BUFFERS = 1, 2, 4
OPERATOR_CODE_DEPRECATED_BUILTIN, OPERATOR_CODE_BUILTIN = 0, 3  # the op is the larger of the two (schema v3a)
SUBGRAPH_TENSORS, SUBGRAPH_INPUTS, SUBGRAPH_OUTPUTS, SUBGRAPH_OPERATORS = 0, 1, 2, 3
TENSOR_SHAPE, TENSOR_TYPE, TENSOR_BUFFER, TENSOR_NAME, TENSOR_QUANTIZATION = 0, 1, 2, 3, 4
QUANTIZATION_SCALE, QUANTIZATION_ZERO_POINT = 2, 3
OPERATOR_OPCODE_INDEX, OPERATOR_INPUTS, OPERATOR_OUTPUTS = 0, 1, 2
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2  # offset/size: data stored after the FlatBuffer (files over 2 GB)

# schema.fbs enum TensorType, by value.
TENSOR_TYPES = (
    "FLOAT32", "FLOAT16", "INT32", "UINT8", "INT64", "STRING", "BOOL", "INT16", "COMPLEX64", "INT8", "FLOAT64",
    "COMPLEX128", "UINT64", "RESOURCE", "VARIANT", "UINT32", "UINT16", "INT4", "BFLOAT16", "INT2", "UINT4",
    "FLOAT8_E4M3FN", "FLOAT8_E5M2",
)  # fmt: skip
# schema.fbs enum BuiltinOperator, by value (LiteRT 2.3.0's schema; tests/test_tflite_reader.py checks it against
# the installed LiteRT). A code beyond it (a newer converter) reads as BUILTIN_<code>.
BUILTIN_OPERATORS = (
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE",
    "EMBEDDING_LOOKUP", "FLOOR", "FULLY_CONNECTED", "HASHTABLE_LOOKUP", "L2_NORMALIZATION", "L2_POOL_2D",
    "LOCAL_RESPONSE_NORMALIZATION", "LOGISTIC", "LSH_PROJECTION", "LSTM", "MAX_POOL_2D", "MUL", "RELU",
    "RELU_N1_TO_1", "RELU6", "RESHAPE", "RESIZE_BILINEAR", "RNN", "SOFTMAX", "SPACE_TO_DEPTH", "SVDF", "TANH",
    "CONCAT_EMBEDDINGS", "SKIP_GRAM", "CALL", "CUSTOM", "EMBEDDING_LOOKUP_SPARSE", "PAD",
    "UNIDIRECTIONAL_SEQUENCE_RNN", "GATHER", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "TRANSPOSE", "MEAN", "SUB",
    "DIV", "SQUEEZE", "UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE", "BIDIRECTIONAL_SEQUENCE_RNN", "EXP",
    "TOPK_V2", "SPLIT", "LOG_SOFTMAX", "DELEGATE", "BIDIRECTIONAL_SEQUENCE_LSTM", "CAST", "PRELU", "MAXIMUM",
    "ARG_MAX", "MINIMUM", "LESS", "NEG", "PADV2", "GREATER", "GREATER_EQUAL", "LESS_EQUAL", "SELECT", "SLICE", "SIN",
    "TRANSPOSE_CONV", "SPARSE_TO_DENSE", "TILE", "EXPAND_DIMS", "EQUAL", "NOT_EQUAL", "LOG", "SUM", "SQRT", "RSQRT",
    "SHAPE", "POW", "ARG_MIN", "FAKE_QUANT", "REDUCE_PROD", "REDUCE_MAX", "PACK", "LOGICAL_OR", "ONE_HOT",
    "LOGICAL_AND", "LOGICAL_NOT", "UNPACK", "REDUCE_MIN", "FLOOR_DIV", "REDUCE_ANY", "SQUARE", "ZEROS_LIKE", "FILL",
    "FLOOR_MOD", "RANGE", "RESIZE_NEAREST_NEIGHBOR", "LEAKY_RELU", "SQUARED_DIFFERENCE", "MIRROR_PAD", "ABS",
    "SPLIT_V", "UNIQUE", "CEIL", "REVERSE_V2", "ADD_N", "GATHER_ND", "COS", "WHERE", "RANK", "ELU",
    "REVERSE_SEQUENCE", "MATRIX_DIAG", "QUANTIZE", "MATRIX_SET_DIAG", "ROUND", "HARD_SWISH", "IF", "WHILE",
    "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5", "SCATTER_ND", "SELECT_V2", "DENSIFY", "SEGMENT_SUM",
    "BATCH_MATMUL", "PLACEHOLDER_FOR_GREATER_OP_CODES", "CUMSUM", "CALL_ONCE", "BROADCAST_TO", "RFFT2D", "CONV_3D",
    "IMAG", "REAL", "COMPLEX_ABS", "HASHTABLE", "HASHTABLE_FIND", "HASHTABLE_IMPORT", "HASHTABLE_SIZE", "REDUCE_ALL",
    "CONV_3D_TRANSPOSE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "BROADCAST_ARGS",
    "RANDOM_STANDARD_NORMAL", "BUCKETIZE", "RANDOM_UNIFORM", "MULTINOMIAL", "GELU", "DYNAMIC_UPDATE_SLICE",
    "RELU_0_TO_1", "UNSORTED_SEGMENT_PROD", "UNSORTED_SEGMENT_MAX", "UNSORTED_SEGMENT_SUM", "ATAN2",
    "UNSORTED_SEGMENT_MIN", "SIGN", "BITCAST", "BITWISE_XOR", "RIGHT_SHIFT", "STABLEHLO_LOGISTIC", "STABLEHLO_ADD",
    "STABLEHLO_DIVIDE", "STABLEHLO_MULTIPLY", "STABLEHLO_MAXIMUM", "STABLEHLO_RESHAPE", "STABLEHLO_CLAMP",
    "STABLEHLO_CONCATENATE", "STABLEHLO_BROADCAST_IN_DIM", "STABLEHLO_CONVOLUTION", "STABLEHLO_SLICE",
    "STABLEHLO_CUSTOM_CALL", "STABLEHLO_REDUCE", "STABLEHLO_ABS", "STABLEHLO_AND", "STABLEHLO_COSINE",
    "STABLEHLO_EXPONENTIAL", "STABLEHLO_FLOOR", "STABLEHLO_LOG", "STABLEHLO_MINIMUM", "STABLEHLO_NEGATE",
    "STABLEHLO_OR", "STABLEHLO_POWER", "STABLEHLO_REMAINDER", "STABLEHLO_RSQRT", "STABLEHLO_SELECT",
    "STABLEHLO_SUBTRACT", "STABLEHLO_TANH", "STABLEHLO_SCATTER", "STABLEHLO_COMPARE", "STABLEHLO_CONVERT",
    "STABLEHLO_DYNAMIC_SLICE", "STABLEHLO_DYNAMIC_UPDATE_SLICE", "STABLEHLO_PAD", "STABLEHLO_IOTA",
    "STABLEHLO_DOT_GENERAL", "STABLEHLO_REDUCE_WINDOW", "STABLEHLO_SORT", "STABLEHLO_WHILE", "STABLEHLO_GATHER",
    "STABLEHLO_TRANSPOSE", "DILATE", "STABLEHLO_RNG_BIT_GENERATOR", "REDUCE_WINDOW", "STABLEHLO_COMPOSITE",
    "STABLEHLO_SHIFT_LEFT", "STABLEHLO_CBRT", "STABLEHLO_CASE",
)  # fmt: skip


@dataclass(frozen=True)
class RawTensor:
    shape: tuple[int, ...]
    dtype: str  # a TENSOR_TYPES name
    buffer: int  # index into RawModel.buffer_sizes
    name: str
    scale: tuple[float, ...]  # () when not quantized
    zero_point: tuple[int, ...]


@dataclass(frozen=True)
class RawOperator:
    op_type: str  # a BUILTIN_OPERATORS name; "CUSTOM" for a custom op
    inputs: tuple[int, ...]  # tensor indices; -1 marks an omitted optional input
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class RawModel:
    """Subgraph 0 of a ``.tflite`` and the size in bytes of each of the model's buffers."""

    tensors: tuple[RawTensor, ...]
    operators: tuple[RawOperator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    buffer_sizes: tuple[int, ...]


def read_tflite(data: bytes) -> RawModel:
    """Parse ``data``; ``ValueError`` (or ``struct.error``/``IndexError``) when it is no TFLite FlatBuffer.

    >>> read_tflite(b"not a model")  # doctest: +SKIP
    ValueError: no TFL3 identifier
    """
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("no TFL3 identifier")
    model = _Table(data, _u32(data, 0))
    subgraphs = model.tables(MODEL_SUBGRAPHS)
    if not subgraphs:
        raise ValueError("no subgraph")
    subgraph = subgraphs[0]
    op_types = tuple(_op_name(code) for code in model.tables(MODEL_OPERATOR_CODES))
    operators = tuple(
        RawOperator(
            op_type=op_types[operator.scalar(OPERATOR_OPCODE_INDEX, "<I", 0)],
            inputs=operator.vector(OPERATOR_INPUTS, "<i"),
            outputs=operator.vector(OPERATOR_OUTPUTS, "<i"),
        )
        for operator in subgraph.tables(SUBGRAPH_OPERATORS)
    )
    return RawModel(
        tensors=tuple(_tensor(tensor) for tensor in subgraph.tables(SUBGRAPH_TENSORS)),
        operators=operators,
        inputs=subgraph.vector(SUBGRAPH_INPUTS, "<i"),
        outputs=subgraph.vector(SUBGRAPH_OUTPUTS, "<i"),
        buffer_sizes=tuple(_buffer_size(buffer) for buffer in model.tables(MODEL_BUFFERS)),
    )


def _op_name(code: _Table) -> str:
    builtin = max(code.scalar(OPERATOR_CODE_BUILTIN, "<i", 0), code.scalar(OPERATOR_CODE_DEPRECATED_BUILTIN, "<b", 0))
    return BUILTIN_OPERATORS[builtin] if 0 <= builtin < len(BUILTIN_OPERATORS) else f"BUILTIN_{builtin}"


def _tensor(tensor: _Table) -> RawTensor:
    quantization = tensor.table(TENSOR_QUANTIZATION)
    type_code = tensor.scalar(TENSOR_TYPE, "<b", 0)
    return RawTensor(
        shape=tensor.vector(TENSOR_SHAPE, "<i"),
        dtype=TENSOR_TYPES[type_code] if 0 <= type_code < len(TENSOR_TYPES) else f"TYPE_{type_code}",
        buffer=tensor.scalar(TENSOR_BUFFER, "<I", 0),
        name=tensor.string(TENSOR_NAME),
        scale=quantization.vector(QUANTIZATION_SCALE, "<f") if quantization else (),
        zero_point=quantization.vector(QUANTIZATION_ZERO_POINT, "<q") if quantization else (),
    )


def _buffer_size(buffer: _Table) -> int:
    data = buffer.vector_length(BUFFER_DATA)
    return data if data else buffer.scalar(BUFFER_SIZE, "<Q", 0)


def _u32(data: bytes, position: int) -> int:
    return struct.unpack_from("<I", data, position)[0]


class _Table:
    """A FlatBuffer table at ``position`` of ``data``: fields by index through its vtable."""

    def __init__(self, data: bytes, position: int) -> None:
        self.data, self.position = data, position
        self.vtable = position - struct.unpack_from("<i", data, position)[0]
        self.vtable_size = struct.unpack_from("<H", data, self.vtable)[0]

    def _field(self, index: int) -> int | None:
        """Where field ``index`` is stored; ``None`` when absent (its default applies)."""
        slot = 4 + 2 * index
        if slot >= self.vtable_size:
            return None
        offset = struct.unpack_from("<H", self.data, self.vtable + slot)[0]
        return self.position + offset if offset else None

    def scalar(self, index: int, fmt: str, default: int) -> int:
        position = self._field(index)
        return default if position is None else struct.unpack_from(fmt, self.data, position)[0]

    def _vector(self, index: int) -> tuple[int, int] | None:
        """(first element's position, length) of a vector field."""
        position = self._field(index)
        if position is None:
            return None
        start = position + _u32(self.data, position)
        return start + 4, _u32(self.data, start)

    def vector_length(self, index: int) -> int:
        found = self._vector(index)
        return found[1] if found else 0

    def vector(self, index: int, fmt: str) -> tuple:
        found = self._vector(index)
        if found is None:
            return ()
        first, length = found
        return struct.unpack_from(f"<{length}{fmt[-1]}", self.data, first)

    def string(self, index: int) -> str:
        position = self._field(index)
        if position is None:
            return ""
        start = position + _u32(self.data, position)
        return self.data[start + 4 : start + 4 + _u32(self.data, start)].decode("utf-8", "replace")

    def table(self, index: int) -> _Table | None:
        position = self._field(index)
        return None if position is None else _Table(self.data, position + _u32(self.data, position))

    def tables(self, index: int) -> list[_Table]:
        found = self._vector(index)
        if found is None:
            return []
        first, length = found
        return [_Table(self.data, first + 4 * i + _u32(self.data, first + 4 * i)) for i in range(length)]
