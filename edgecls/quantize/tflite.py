"""TFLite INT8 and FP16 through the LiteRT converter, with selective quantization.

- Plain INT8: Keras' ``model.export(format="litert")`` with the converter
  attributes for full-integer quantization (``TFLITE_BUILTINS_INT8`` only, so
  the converter refuses rather than leaves a float op behind).
- Selective INT8 (the accuracy budget): the two steps ``TFLiteConverter.convert``
  runs for INT8 — calibrate, then ``mlir_quantize`` — done separately, as the
  LiteRT ``QuantizationDebugger`` does: calibration runs once, and each
  re-quantization with ``denylisted_nodes`` takes milliseconds.
- Per-layer error: the ``QuantizationDebugger`` on a debug model in
  whole-model-verify mode, whose NumericVerify ops see each op's float-model
  activation beside its INT8 tensor.

``--io``: ``int8`` (default; XNNPACK's fast kernels are signed), ``uint8``
(camera bytes go straight in: input scale 1, zero point 0) or ``float``.
"""

from __future__ import annotations

import csv
import io as _io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgecls.errors import ModelError
from edgecls.quantize.budget import GraphOp, LayerError, channel_error, layers_in_name, relative_error
from edgecls.quantize.calibration import CalibrationSet
from edgecls.runtime.metadata import ModelInfo

log = logging.getLogger(__name__)

IO_TYPES = ("int8", "uint8", "float")
DEBUG_IMAGES = 64  # calibration images the per-layer analysis runs on (one batch)
FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64")


def representative_dataset(calibration: CalibrationSet) -> Callable[[], Any]:
    """The converter's representative dataset: one image at a time, float pixels 0..255."""

    def generate():
        for batch in calibration.batches(1):
            yield [batch.astype(np.float32)]

    return generate


def _tf_type(io: str):
    import tensorflow as tf

    return {"int8": tf.int8, "uint8": tf.uint8, "float": tf.float32}[io]


def int8_converter_options(calibration: CalibrationSet, *, io: str = "int8", per_channel: bool = True) -> dict[str, Any]:
    """LiteRT converter attributes for a full-integer model (for ``model.export(format="litert", **options)``)."""
    import tensorflow as tf

    options: dict[str, Any] = {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": representative_dataset(calibration),
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        "inference_input_type": _tf_type(io),
        "inference_output_type": _tf_type(io),
    }
    if not per_channel:
        options["_experimental_disable_per_channel"] = True
    return options


def convert_int8(model, calibration: CalibrationSet, *, io: str = "int8", per_channel: bool = True) -> bytes:
    """Full-integer INT8 TFLite bytes (no metadata) through Keras' LiteRT exporter."""
    from edgecls.export.tflite import convert_tflite

    try:
        return convert_tflite(model, **int8_converter_options(calibration, io=io, per_channel=per_channel))
    except Exception as exc:  # the converter raises ConverterError/RuntimeError for ops without an INT8 kernel
        raise ModelError(f"the LiteRT converter could not make a full-integer model ({exc}); an op without an INT8 kernel needs --io float or a budget with --eval-data") from exc


def convert_fp16(model) -> bytes:
    """FP16-weight TFLite bytes (float I/O) for GPU delegates."""
    from edgecls.export.tflite import convert_tflite, fp16_options

    return convert_tflite(model, **fp16_options())


def calibrate(model, calibration: CalibrationSet) -> bytes:
    """The float TFLite model with calibration statistics: step one of INT8 conversion.

    The same SavedModel → ``TFLiteConverter`` route Keras' LiteRT exporter takes.
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = Path(scratch) / "saved_model"
        model.export(str(saved), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(calibration)
        converter._experimental_calibrate_only = True  # what QuantizationDebugger sets: stop after calibration
        return converter.convert()


def requantize(calibrated: bytes, *, io: str = "int8", per_channel: bool = True, float_nodes: Sequence[str] = (), debug: bool = False) -> bytes:
    """Step two: quantize a calibrated model, keeping ``float_nodes`` (op output tensor names) in float.

    ``debug=True`` adds NumericVerify ops in whole-model mode (float I/O) for the debugger.
    """
    from tensorflow.lite.python.convert import mlir_quantize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if debug:
            return mlir_quantize(calibrated, disable_per_channel=not per_channel, enable_numeric_verify=True, enable_whole_model_verify=True)
        return mlir_quantize(
            calibrated, disable_per_channel=not per_channel, input_data_type=_tf_type(io), output_data_type=_tf_type(io),
            denylisted_nodes=sorted(float_nodes) or None,
        )


def layer_errors(calibrated: bytes, calibration: CalibrationSet, *, per_channel: bool, layer_names: Sequence[str]) -> list[LayerError]:
    """Per-tensor quantization error from the LiteRT ``QuantizationDebugger``.

    Runs on the first ``DEBUG_IMAGES`` calibration images (never the
    evaluation images) as one batch, so each metric sees all of them at once.
    """
    import tensorflow as tf

    images = calibration.images[:DEBUG_IMAGES].astype(np.float32)
    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_direct_compare_metrics={
            # The quantized values arrive as int8; see QuantizationDebugOptions.
            "isolated_error": lambda float_values, _q, scale, zero_point: channel_error(float_values, scale, zero_point),
            "accumulated_error": lambda float_values, q, scale, zero_point: relative_error(float_values, (q.astype(np.float64) - zero_point) * scale),
        }
    )
    debug_model = requantize(calibrated, per_channel=per_channel, debug=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice; the debugger needs it
        debugger = tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=debug_model, debug_dataset=lambda: iter([[images]]), debug_options=options
        )
        debugger.run()
    table = _io.StringIO()
    debugger.layer_statistics_dump(table)
    table.seek(0)
    outputs = set(output_names(calibrated))
    errors = []
    for row in csv.DictReader(table):
        name = row["tensor_name"]
        if name in outputs:  # the probabilities: a fixed 1/256 grid that top-1 does not feel, and nothing to keep float after it
            continue
        errors.append(LayerError(
            tensor=name, layers=list(layers_in_name(name, layer_names)) or [name], op_type=row["op_name"],
            error=round(float(row["isolated_error"]), 6), accumulated=round(float(row["accumulated_error"]), 6), scale=float(row["scale"]),
        ))
    return errors


# --- reading a TFLite graph ------------------------------------------------------


def _read(model_bytes: bytes):
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def graph_ops(model_bytes: bytes, layer_names: Sequence[str] = ()) -> list[GraphOp]:
    """The ops of subgraph 0; ``node`` is the first output tensor's name (what ``denylisted_nodes`` takes)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = _read(model_bytes)
    subgraph = model.subgraphs[0]
    names = [_text(tensor.name) for tensor in subgraph.tensors]
    ops = []
    for operator in subgraph.operators:
        outputs = tuple(names[i] for i in operator.outputs if i >= 0)
        ops.append(GraphOp(
            node=outputs[0] if outputs else "",
            op_type=flatbuffer_utils.opcode_to_name(model, operator.opcodeIndex) or "CUSTOM",
            inputs=tuple(names[i] for i in operator.inputs if i >= 0),
            outputs=outputs,
            layers=layers_in_name(outputs[0], layer_names) if outputs else (),
        ))
    return ops


def output_names(model_bytes: bytes) -> list[str]:
    subgraph = _read(model_bytes).subgraphs[0]
    return [_text(subgraph.tensors[index].name) for index in subgraph.outputs]


def op_types(model_bytes: bytes) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """``(op type, input tensor types, output tensor types)`` for every op of subgraph 0."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = _read(model_bytes)
    subgraph = model.subgraphs[0]
    kinds = [flatbuffer_utils.type_to_name(tensor.type) for tensor in subgraph.tensors]
    return [
        (
            flatbuffer_utils.opcode_to_name(model, operator.opcodeIndex) or "CUSTOM",
            tuple(kinds[i] for i in operator.inputs if i >= 0),
            tuple(kinds[i] for i in operator.outputs if i >= 0),
        )
        for operator in subgraph.operators
    ]


def float_ops(model_bytes: bytes) -> list[str]:
    """Ops that read or write a float tensor (or are custom): empty for a full-integer graph.

    The QUANTIZE/DEQUANTIZE pairs around float I/O or around layers kept
    float on purpose count too: they are where float math happens.
    """
    found = []
    for op_type, inputs, outputs in op_types(model_bytes):
        if op_type == "CUSTOM" or any(kind in FLOAT_TYPES for kind in inputs + outputs):
            found.append(op_type)
    return found


def io_quantization(model_bytes: bytes) -> dict[str, Any]:
    """Input and output tensor type, scale and zero point (what the runtime's ``to_input`` relies on)."""
    from ai_edge_litert.tools import flatbuffer_utils

    subgraph = _read(model_bytes).subgraphs[0]

    def describe(index: int) -> dict[str, Any]:
        tensor = subgraph.tensors[index]
        quantization = tensor.quantization
        scale = float(quantization.scale[0]) if quantization is not None and quantization.scale is not None and len(quantization.scale) else 0.0
        zero_point = int(quantization.zeroPoint[0]) if quantization is not None and quantization.zeroPoint is not None and len(quantization.zeroPoint) else 0
        return {"dtype": flatbuffer_utils.type_to_name(tensor.type).lower(), "scale": scale, "zero_point": zero_point}

    return {"input": describe(subgraph.inputs[0]), "output": describe(subgraph.outputs[0])}


def pin_uint8_input(model_bytes: bytes) -> bytes:
    """Give a uint8 input tensor scale 1 and zero point 0: the bytes *are* the pixels.

    The converter sets the input's parameters from the calibration images'
    range; a set without a 0 or a 255 pixel would give e.g. scale 0.94, and
    the runtime would then need float math per pixel. The uint8 input feeds
    a QUANTIZE op (uint8 → int8 requantization), which reads the input's
    parameters, so stating the true ones (real value = byte) changes no
    output: pixels outside the calibrated range clip inside the graph as before.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = _read(model_bytes)
    subgraph = model.subgraphs[0]
    index = subgraph.inputs[0]
    tensor = subgraph.tensors[index]
    if tensor.type != schema.TensorType.UINT8:
        return model_bytes
    quantization = tensor.quantization
    if quantization is not None and len(quantization.scale) == 1 and abs(float(quantization.scale[0]) - 1.0) < 1e-9 and int(quantization.zeroPoint[0]) == 0:
        return model_bytes
    consumers = [op for op in subgraph.operators if index in list(op.inputs)]
    if not consumers or any(flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) != "QUANTIZE" for op in consumers):
        raise ModelError("the uint8 input does not feed a QUANTIZE op; cannot give it scale 1 / zero point 0")
    log.info("uint8 input: calibrated scale %s zero point %s → 1.0 / 0 (pixels 0..255 as bytes)", list(quantization.scale), list(quantization.zeroPoint))
    quantization.scale, quantization.zeroPoint = [1.0], [0]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


class TFLiteRequantizer:
    """The budget loop's handle on one Keras model's TFLite INT8 conversion."""

    def __init__(self, model, calibration: CalibrationSet, info: ModelInfo, *, io: str, per_channel: bool, scratch: Path) -> None:
        self.model, self.calibration, self.info = model, calibration, info
        self.io, self.per_channel, self.scratch = io, per_channel, scratch
        self.layer_names = [layer.name for layer in model.layers]
        self._calibrated: bytes | None = None
        self._count = 0

    @property
    def calibrated(self) -> bytes:
        if self._calibrated is None:
            self._calibrated = calibrate(self.model, self.calibration)
        return self._calibrated

    def quantize(self, float_nodes: frozenset[str]) -> Path:
        if float_nodes:
            model_bytes = requantize(self.calibrated, io=self.io, per_channel=self.per_channel, float_nodes=sorted(float_nodes))
        else:
            model_bytes = convert_int8(self.model, self.calibration, io=self.io, per_channel=self.per_channel)
        from edgecls.export.metadata import embed_tflite

        if self.io == "uint8":
            model_bytes = pin_uint8_input(model_bytes)
        self._count += 1
        path = self.scratch / f"candidate{self._count}.tflite"
        path.write_bytes(embed_tflite(model_bytes, self.info))  # scratch: the final file is written atomically later
        return path

    def graph(self) -> list[GraphOp]:
        return graph_ops(self.calibrated, self.layer_names)

    def layer_errors(self) -> list[LayerError]:
        return layer_errors(self.calibrated, self.calibration, per_channel=self.per_channel, layer_names=self.layer_names)
