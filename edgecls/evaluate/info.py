"""``edgecls info``: what an artifact is, from the file alone.

Input/output spec, labels and provenance carried in the file, parameters,
MACs, size, op counts by type, and for quantized graphs which ops compute in
integers and which stayed float.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.base.errors import ModelError
from edgecls.runtime.metadata import read_model_info


@dataclass
class TensorInfo:
    name: str
    shape: list[int]
    dtype: str
    quantization: str | None = None  # "scale=… zero_point=…" for quantized tensors


@dataclass
class ArtifactInfo:
    path: str
    format: str
    size_bytes: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    params: int | None  # None where it could not be read (an .onnx without the onnx package)
    macs: int | None
    op_counts: dict[str, int]
    integer_ops: int  # ops on integer kernels: TFLite by tflite_graph.Op.computes_in_integer; ONNX QLinear*, fused QDQ
    float_ops: list[str] = field(default_factory=list)  # "<OP> <output tensor or node>" of ops computing in float
    labels: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    metadata: bool = False
    notes: list[str] = field(default_factory=list)  # what could not be read here, and what would read it


# ONNX ops that do arithmetic worth quantizing; the rest (reshape, pad, quantize/dequantize…) move data.
# (TFLite ops are integer or float by ``edgecls.adapters.tflite_graph.Op.computes_in_float``, the quantize
# report's rule.)
COMPUTE_OPS = {
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Mul",
    "Sub",
    "GlobalAveragePool",
    "AveragePool",
    "MaxPool",
    "Softmax",
    "Relu",
    "Clip",
    "HardSwish",
    "HardSigmoid",
    "Sigmoid",
    "Concat",
    "ReduceMean",
}


def inspect_artifact(path: str | Path, *, unsafe: bool = False) -> ArtifactInfo:
    """Describe a ``.keras``, ``.tflite`` or ``.onnx`` file.

    >>> inspect_artifact("model_int8.tflite").float_ops  # doctest: +SKIP
    []
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    readers = {".keras": _keras, ".tflite": _tflite, ".onnx": _onnx}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise ModelError(f"{path}: expected .keras, .tflite or .onnx")
    result = reader(path, unsafe) if reader is _keras else reader(path)
    info = read_model_info(path)
    if info is not None:
        result.labels, result.provenance, result.metadata = list(info.labels), dict(info.provenance), True
    return result


def _keras(path: Path, unsafe: bool) -> ArtifactInfo:
    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.models.stats import count_params_and_macs

    model = load_keras_model(path, unsafe=unsafe)
    params, macs = count_params_and_macs(model)
    ops = Counter(type(layer).__name__ for layer in model.layers)
    spec = lambda tensor: TensorInfo(tensor.name, [d if d is not None else -1 for d in tensor.shape], str(tensor.dtype))  # noqa: E731
    return ArtifactInfo(
        str(path),
        "keras",
        path.stat().st_size,
        [spec(t) for t in model.inputs],
        [spec(t) for t in model.outputs],
        params,
        macs,
        dict(ops),
        0,
    )


def _tflite(path: Path) -> ArtifactInfo:
    from edgecls.adapters.tflite_graph import TFLiteGraph

    graph = TFLiteGraph.read(path)

    def tensor(t) -> TensorInfo:
        described = None
        if t.scale:
            channels = f" ({len(t.scale)} channels)" if len(t.scale) > 1 else ""
            described = f"scale={t.scale[0]:.6g} zero_point={t.zero_point[0]}{channels}"
        return TensorInfo(t.name, list(t.shape), t.dtype, described)

    float_ops = [f"{op.op_type} {op.node}".strip() for op in graph.float_ops()]  # the quantize report counts these too
    return ArtifactInfo(
        str(path),
        "tflite",
        path.stat().st_size,
        [tensor(t) for t in graph.inputs],
        [tensor(t) for t in graph.outputs],
        graph.params(),
        graph.macs() or None,
        graph.op_counts(),
        len(graph.integer_ops()),
        float_ops,
    )


def _onnx(path: Path) -> ArtifactInfo:
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:  # a device: ONNX Runtime alone reads the I/O (and the metadata), not the graph
        return _onnx_by_onnxruntime(path)

    try:
        model = shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception as exc:  # DecodeError and friends
        raise ModelError(f"{path}: not a valid ONNX model ({exc})") from exc
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    shapes: dict[str, list[int]] = {}
    for value in list(graph.value_info) + list(graph.input) + list(graph.output):
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
    for name, init in initializers.items():
        shapes[name] = list(init.dims)
    producers = {output: node for node in graph.node for output in node.output}
    ops: Counter[str] = Counter(node.op_type for node in graph.node)
    integer_ops, float_ops, macs = 0, [], 0
    for node in graph.node:
        if node.op_type.startswith("QLinear") or node.op_type in ("ConvInteger", "MatMulInteger"):
            integer_ops += 1
        elif node.op_type in COMPUTE_OPS:
            fed_by_dequantize = any(
                producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in node.input[:1]
            )
            if fed_by_dequantize:
                integer_ops += 1  # QDQ: ONNX Runtime fuses DQ → op → Q into an integer kernel
            else:
                float_ops.append(f"{node.op_type} {node.name}")
        macs += _onnx_macs(node, shapes)
    data_type = lambda value: onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower()  # noqa: E731
    spec = lambda value: TensorInfo(value.name, shapes.get(value.name, []), data_type(value))  # noqa: E731
    params = sum(int(np.prod(init.dims)) for init in initializers.values())
    real_inputs = [value for value in graph.input if value.name not in initializers]
    return ArtifactInfo(
        str(path),
        "onnx",
        path.stat().st_size,
        [spec(v) for v in real_inputs],
        [spec(v) for v in graph.output],
        params,
        macs or None,
        dict(ops),
        integer_ops,
        float_ops,
    )


ONNX_GRAPH_NOTE = "op counts, params, MACs and integer/float ops need the onnx package: pip install onnx"


def _onnx_by_onnxruntime(path: Path) -> ArtifactInfo:
    """Inputs and outputs through an ONNX Runtime session; the graph itself needs ``onnx`` (said in ``notes``)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError(f"{path}: reading an .onnx file needs onnx or onnxruntime: pip install onnxruntime") from exc
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # InvalidProtobuf, Fail: ONNX Runtime's own error types
        raise ModelError(f"{path}: not a valid ONNX model ({exc})") from exc

    def spec(value) -> TensorInfo:
        shape = [d if isinstance(d, int) else -1 for d in value.shape]  # a symbolic batch dimension is a name
        return TensorInfo(value.name, shape, value.type.removeprefix("tensor(").removesuffix(")"))

    inputs, outputs = [spec(v) for v in session.get_inputs()], [spec(v) for v in session.get_outputs()]
    size = path.stat().st_size
    return ArtifactInfo(str(path), "onnx", size, inputs, outputs, None, None, {}, 0, notes=[ONNX_GRAPH_NOTE])


def _onnx_macs(node, shapes: dict[str, list[int]]) -> int:
    output = shapes.get(node.output[0]) if node.output else None
    if not output or any(d <= 0 for d in output[1:]):
        return 0
    out_elements = int(np.prod([max(d, 1) for d in output]))
    if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in shapes:
        weight = shapes[node.input[1]]  # (Cout, Cin/group, kh, kw)
        return out_elements * int(np.prod(weight[1:]))
    if node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in shapes:
        weight = shapes[node.input[1]]
        transposed = any(a.name == "transB" and a.i for a in node.attribute)
        return out_elements * (weight[1] if transposed else weight[0])
    return 0
