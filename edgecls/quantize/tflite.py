"""TFLite INT8 and FP16 through the LiteRT converter, with selective quantization.

- Plain INT8: Keras' ``model.export(format="litert")`` with the converter
  attributes for full-integer quantization (``TFLITE_BUILTINS_INT8`` only, so
  the converter refuses rather than leaves a float op behind).
- Selective INT8 (the accuracy budget): the two steps ``TFLiteConverter.convert``
  runs for INT8 — calibrate, then quantize — done separately, as the LiteRT
  ``QuantizationDebugger`` does: calibration runs once, and each
  re-quantization with ``denylisted_nodes`` takes milliseconds (the converter
  privates this needs live in ``edgecls.adapters.litert_converter``).
- Per-layer error: the ``QuantizationDebugger`` on a debug model in
  whole-model-verify mode, whose NumericVerify ops see each op's float-model
  activation beside its INT8 tensor.

``--io``: ``int8`` (default; XNNPACK's fast kernels are signed), ``uint8``
(camera bytes go straight in: input scale 1, zero point 0) or ``float``.

``quantize_tflite(job)`` is this format's whole path for ``edgecls quantize``.
"""

from __future__ import annotations

import csv
import io as _io
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.adapters import litert_converter
from edgecls.adapters.tflite_graph import TFLiteGraph
from edgecls.base.errors import ModelError
from edgecls.quantize.budget import GraphOp, LayerError, channel_error, layers_in_name, relative_error
from edgecls.quantize.calibration import CalibrationSet
from edgecls.quantize.config import QuantizedArtifact
from edgecls.quantize.job import QuantizeJob, artifact_record
from edgecls.runtime.metadata import ModelInfo

log = logging.getLogger(__name__)

DEBUG_IMAGES = 64  # calibration images the per-layer analysis runs on (one batch)


def representative_dataset(calibration: CalibrationSet) -> Callable[[], Any]:
    """The converter's representative dataset: one image at a time, float pixels 0..255."""
    from edgecls.export.tflite import representative_images

    return representative_images(calibration.images)


def int8_converter_options(
    calibration: CalibrationSet, *, io: str = "int8", per_channel: bool = True
) -> dict[str, Any]:
    """LiteRT converter attributes for a full-integer model (for ``model.export(format="litert", **options)``)."""
    from edgecls.export.tflite import int8_options

    return int8_options(calibration.images, io=io, per_channel=per_channel)


def converter_source(model, *, folder: Path | None = None):
    """``model``'s ``LiteRTSource`` for the TFLite conversions ``edgecls quantize`` makes of it (FP32 for its size,
    INT8, calibration): one SavedModel for all, traced as the converter reads a QAT model (``converter_ops``; a
    float model traces the same either way)."""
    from edgecls.export.tflite import LiteRTSource
    from edgecls.quantize.fake_quant import converter_ops

    return LiteRTSource(model, folder=folder, tracing=converter_ops)


def _source(model):
    """A context giving ``model`` itself when it is a ``LiteRTSource`` (its owner closes it), else a temporary
    ``converter_source`` of it."""
    from edgecls.export import tflite
    from edgecls.quantize.fake_quant import converter_ops

    return tflite.litert_source(model, tracing=converter_ops)


def convert_int8(model, calibration: CalibrationSet, *, io: str = "int8", per_channel: bool = True) -> bytes:
    """Full-integer INT8 TFLite bytes (no metadata) through Keras' LiteRT exporter's path.

    ``model``: a Keras model, or its ``converter_source`` when the same model is converted more than once.
    """
    try:
        with _source(model) as source:  # a QAT model's fake quantization as the op the converter reads ranges from
            return source.convert(**int8_converter_options(calibration, io=io, per_channel=per_channel))
    except Exception as exc:  # the converter raises ConverterError/RuntimeError for ops without an INT8 kernel
        raise ModelError(
            f"the LiteRT converter could not make a full-integer model ({exc}); an op without an INT8 kernel needs "
            "--io float or a budget with --eval-data"
        ) from exc


def convert_fp16(model) -> bytes:
    """FP16-weight TFLite bytes (float I/O) for GPU delegates; ``model`` as in ``convert_int8``."""
    from edgecls.export.tflite import fp16_options

    with _source(model) as source:
        return source.convert(**fp16_options())


def calibrate(model, calibration: CalibrationSet) -> bytes:
    """The float TFLite model with calibration statistics: step one of INT8 conversion.

    From the SavedModel Keras' LiteRT exporter converts (``model`` as in ``convert_int8``).
    """
    with _source(model) as source, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return litert_converter.calibrate_saved_model(source.saved_model(), representative_dataset(calibration))


def requantize(
    calibrated: bytes,
    *,
    io: str = "int8",
    per_channel: bool = True,
    float_nodes: Sequence[str] = (),
    debug: bool = False,
) -> bytes:
    """Step two: quantize a calibrated model, keeping ``float_nodes`` (op output tensor names) in float.

    ``debug=True`` adds NumericVerify ops in whole-model mode (float I/O) for the debugger.
    """
    if debug:
        return litert_converter.numeric_verify_model(calibrated, per_channel=per_channel)
    return litert_converter.quantize_calibrated(
        calibrated, io=io, per_channel=per_channel, denylisted_nodes=float_nodes
    )


def layer_errors(
    calibrated: bytes, calibration: CalibrationSet, *, per_channel: bool, layer_names: Sequence[str]
) -> list[LayerError]:
    """Per-tensor quantization error from the LiteRT ``QuantizationDebugger``.

    Runs on the first ``DEBUG_IMAGES`` calibration images (never the
    evaluation images) as one batch, so each metric sees all of them at once.
    """
    import tensorflow as tf

    images = calibration.images[:DEBUG_IMAGES].astype(np.float32)
    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_direct_compare_metrics={
            # The quantized values arrive as int8; see QuantizationDebugOptions.
            "isolated_error": lambda float_values, _q, scale, zero_point: channel_error(
                float_values, scale, zero_point
            ),
            "accumulated_error": lambda float_values, q, scale, zero_point: relative_error(
                float_values, (q.astype(np.float64) - zero_point) * scale
            ),
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
        if (
            name in outputs
        ):  # the probabilities: a fixed 1/256 grid that top-1 does not feel, and nothing to keep float after it
            continue
        errors.append(
            LayerError(
                tensor=name,
                layers=list(layers_in_name(name, layer_names)) or [name],
                op_type=row["op_name"],
                error=round(float(row["isolated_error"]), 6),
                accumulated=round(float(row["accumulated_error"]), 6),
                scale=float(row["scale"]),
            )
        )
    return errors


# --- the TFLite graph, as the budget loop sees it --------------------------------------


def graph_ops(model_bytes: bytes, layer_names: Sequence[str] = ()) -> list[GraphOp]:
    """The ops of subgraph 0; ``node`` is the first output tensor's name (what ``denylisted_nodes`` takes)."""
    return [
        GraphOp(
            node=op.node,
            op_type=op.op_type,
            inputs=tuple(t.name for t in op.inputs),
            outputs=tuple(t.name for t in op.outputs),
            layers=layers_in_name(op.node, layer_names) if op.outputs else (),
        )
        for op in TFLiteGraph.from_bytes(model_bytes).ops
    ]


def output_names(model_bytes: bytes) -> list[str]:
    return [tensor.name for tensor in TFLiteGraph.from_bytes(model_bytes).outputs]


def pin_uint8_input(model_bytes: bytes) -> bytes:
    """Give a uint8 input tensor scale 1 and zero point 0: the bytes *are* the pixels.

    The converter sets the input's parameters from the calibration images'
    range; a set without a 0 or a 255 pixel would give e.g. scale 0.94, and
    the runtime would then need float math per pixel. The uint8 input feeds
    a QUANTIZE op (uint8 → int8 requantization), which reads the input's
    parameters, so stating the true ones (real value = byte) changes no
    output: pixels outside the calibrated range clip inside the graph as before.
    """
    graph = TFLiteGraph.from_bytes(model_bytes)
    tensor = graph.inputs[0]
    if tensor.dtype != "UINT8":
        return model_bytes
    if len(tensor.scale) == 1 and abs(tensor.scale[0] - 1.0) < 1e-9 and tensor.zero_point[0] == 0:
        return model_bytes
    consumers = [op for op in graph.ops if tensor in op.inputs]
    if not consumers or any(op.op_type != "QUANTIZE" for op in consumers):
        raise ModelError("the uint8 input does not feed a QUANTIZE op; cannot give it scale 1 / zero point 0")
    log.info(
        "uint8 input: calibrated scale %s zero point %s → 1.0 / 0 (pixels 0..255 as bytes)",
        list(tensor.scale),
        list(tensor.zero_point),
    )
    graph.set_quantization(tensor, 1.0, 0)
    return graph.to_bytes()


class TFLiteRequantizer:
    """The budget loop's handle on one Keras model's TFLite INT8 conversion.

    ``source``: the model's ``converter_source`` when the caller converts the model too (``quantize_tflite``'s
    FP32 size, the ``--qat`` PTQ baseline), so that its SavedModel is written once; else one in ``scratch``.
    """

    def __init__(
        self,
        model,
        calibration: CalibrationSet,
        info: ModelInfo,
        *,
        io: str,
        per_channel: bool,
        scratch: Path,
        source=None,
    ) -> None:
        self.model, self.calibration, self.info = model, calibration, info
        self.io, self.per_channel, self.scratch = io, per_channel, scratch
        self.source = source if source is not None else converter_source(model, folder=scratch / "saved_model")
        self.layer_names = [layer.name for layer in model.layers]
        self._calibrated: bytes | None = None
        self._count = 0

    @property
    def calibrated(self) -> bytes:
        if self._calibrated is None:
            self._calibrated = calibrate(self.source, self.calibration)
        return self._calibrated

    def quantize(self, float_nodes: frozenset[str]) -> Path:
        if float_nodes:
            model_bytes = requantize(
                self.calibrated, io=self.io, per_channel=self.per_channel, float_nodes=sorted(float_nodes)
            )
        else:
            model_bytes = convert_int8(self.source, self.calibration, io=self.io, per_channel=self.per_channel)
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
        return layer_errors(
            self.calibrated, self.calibration, per_channel=self.per_channel, layer_names=self.layer_names
        )


class QatTFLiteRequantizer(TFLiteRequantizer):
    """``TFLiteRequantizer`` for a QAT model (``--qat``): plain INT8 is the converter's reading of its fake-quant ops.

    Calibrated, a QAT model is already INT8 past its first fake-quant op (the converter quantizes such a graph from
    the ops' ranges), so neither the debugger nor ``denylisted_nodes`` would reach its later tensors. The per-layer
    errors, and the candidates with layers kept in float, come instead from the QAT model's folded float weights
    (``qat_graph.deploy_model``), calibrated, with each tensor a QAT quantizer rounds given its learned range as the
    statistics (``qat.tflite_ranges``): every other tensor is quantized as the QAT model quantizes it.
    """

    @property
    def calibrated(self) -> bytes:
        if self._calibrated is None:
            from edgecls.quantize.qat import tflite_ranges
            from edgecls.quantize.qat_graph import deploy_model

            taps: dict[str, Any] = {}
            deploy = deploy_model(self.model, taps=taps)
            graph = TFLiteGraph.from_bytes(calibrate(deploy, self.calibration))
            ranges = tflite_ranges(self.model, deploy, taps, graph.to_bytes(), self.calibration.images)
            for tensor in graph.tensors:
                if tensor.name in ranges:
                    graph.set_range(tensor, *ranges[tensor.name])
            self._calibrated = graph.to_bytes()
        return self._calibrated


# --- this format's whole quantize path ---------------------------------------------------


def quantize_tflite(job: QuantizeJob) -> QuantizedArtifact:
    """INT8 (held to the budget) or FP16 TFLite artifact of ``job.keras_model``, written to ``job.final``."""
    from edgecls.export.metadata import embed_tflite
    from edgecls.export.tflite import convert_tflite, write_tflite_bytes

    started = time.time()
    config = job.config
    # the float model's SavedModel, written once for its FP32 size, INT8 and calibration (and the --qat PTQ baseline)
    source = job.litert if job.litert is not None else converter_source(job.keras_model, folder=job.work / "float")
    fp32_size = len(embed_tflite(convert_tflite(source), job.info))
    if config.precision == "fp16":
        candidate = job.work / "fp16.tflite"
        candidate.write_bytes(embed_tflite(convert_fp16(source), job.info))
        outcome = job.judge_once(candidate)
        io, scheme = "float", "FP16 weights, float32 compute on CPU (LiteRT converter)"
    else:
        # --qat: the QAT model goes through the same converter, which takes its fake-quant ops' ranges
        model = job.qat.model if job.qat is not None else job.keras_model
        options = dict(io=config.io, per_channel=config.per_channel, scratch=job.work)
        if job.qat is None:
            requantizer = TFLiteRequantizer(model, job.calibration, job.info, source=source, **options)
        else:
            requantizer = QatTFLiteRequantizer(model, job.calibration, job.info, **options)
        outcome = job.run_budget(requantizer)
        candidate, io = Path(outcome.path), config.io
        weights = "per-channel" if config.per_channel else "per-tensor"
        ranges = "ranges from QAT" if job.qat is not None else "min/max calibration"
        scheme = f"full-integer INT8 (LiteRT converter): {weights} int8 weights, int8 activations ({ranges}), {io} I/O"
    written = write_tflite_bytes(candidate.read_bytes(), job.final, job.final_info(outcome))
    graph = TFLiteGraph.read(written)
    return artifact_record(
        written,
        fmt="tflite",
        precision=config.precision,
        io=io,
        scheme=scheme,
        fp32_size=fp32_size,
        outcome=outcome,
        started=started,
        float_ops=len(graph.float_ops()),
        integer_ops=len(graph.integer_ops()),
        input=graph.io_quantization()["input"],
    )
