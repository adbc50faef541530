"""ONNX static INT8 (QDQ) through ``onnxruntime.quantization``, with selective quantization.

``quant_pre_process`` (shape inference + graph optimisation), then
``quantize_static`` in QDQ format with per-channel weights, the chosen
calibration method, and a ``CalibrationDataReader`` over the shared
``CalibrationSet``. Layers kept in float are ``nodes_to_exclude``. The
per-tensor error compares the float model's intermediate outputs with the
QDQ model's (``onnxruntime.quantization.qdq_loss_debug``).

Two schemes (``QuantizeConfig.onnx_scheme``), both signed INT8 (S8S8) with
per-channel weights:

- ``cpu`` (the default): activations asymmetric, weights in 7 bits
  (``reduce_range``). ONNX Runtime's x86 kernels without VNNI (AVX2) add pairs
  of 8-bit products in saturating 16-bit lanes, and full-range weights overflow
  them — measured on this project's AMD EPYC host, the digits CNN lost 5.3
  top-1 points that way (0.0 with 7-bit weights; with graph optimisations off,
  i.e. no fused integer kernels, 0.0 too). An artifact for CPUs must be right
  on every CPU it may meet, so 7 bits; ARM loses nothing measurable.
- ``tensorrt`` (``edgecls quantize --target jetson``, and the pipeline when it
  benches a Jetson): what TensorRT's explicit quantization builds as INT8 —
  symmetric activations and weights (zero point 0), full 8-bit weights. Its
  top-1 is measured like every artifact's, through ONNX Runtime on this host;
  TensorRT accumulates int8 products in int32, so on an x86 host without VNNI
  the figure may read lower than the Jetson's (the saturation above), which
  errs on the safe side of the budget.

The input stays float32: the runtime's ``Classifier`` casts camera bytes to it.

``quantize_onnx(job)`` is this format's whole path for ``edgecls quantize``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgecls.base.errors import ConfigError, ModelError
from edgecls.quantize.budget import GraphOp, LayerError, channel_error, layers_in_name, relative_error
from edgecls.quantize.calibration import CalibrationSet
from edgecls.quantize.config import METHODS, ONNX_SCHEMES, QuantizedArtifact
from edgecls.quantize.job import QuantizeJob, artifact_record
from edgecls.runtime.metadata import ModelInfo

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 16
DEBUG_IMAGES = 64


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if name not in methods:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {name!r}")
    return methods[name]


def calibration_reader(
    calibration: CalibrationSet, input_name: str, *, batch_size: int = CALIBRATION_BATCH, limit: int | None = None
):
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a ``CalibrationSet`` (float32 pixels 0..255)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch.astype(np.float32)}

        def rewind(self) -> None:
            images = calibration.images if limit is None else calibration.images[:limit]
            self._batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))

    return Reader()


def preprocess(float_model_path: Path, output_path: Path) -> Path:
    """``quant_pre_process``: symbolic shape inference and ORT's graph optimisations (fuses MatMul+Add → Gemm)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(float_model_path), str(output_path))
    except Exception as exc:  # onnx/ORT raise their own types
        raise ModelError(f"{float_model_path}: ONNX Runtime's quantization pre-processing failed ({exc})") from exc
    return output_path


def quantize_qdq(
    pre_path: Path,
    output_path: Path,
    calibration: CalibrationSet,
    *,
    method: str = "minmax",
    per_channel: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    cache_path: Path | None = None,
    scheme: str = "cpu",
    ranges: dict | None = None,
) -> Path:
    """Static QDQ INT8 of a pre-processed float model in ``scheme`` (cpu | tensorrt, see the module's doc).

    ``ranges``: ``TensorQuantOverrides`` (tensor → scale and zero point) that win over calibration (QAT's).
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    input_name = onnx.load(str(pre_path), load_external_data=False).graph.input[0].name
    # Equal batches: ORT's histogram calibrators (percentile, entropy) stack per-batch outputs and fail on a short
    # last batch.
    batch_size = max(size for size in range(1, CALIBRATION_BATCH + 1) if len(calibration) % size == 0)
    with contextlib.redirect_stdout(sys.stderr):  # the histogram calibrators print progress
        quantize_static(
            str(pre_path),
            str(output_path),
            calibration_reader(calibration, input_name, batch_size=batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_method(method),
            nodes_to_exclude=sorted(nodes_to_exclude) or None,
            calibration_cache_path=str(cache_path) if cache_path else None,
            **_with_ranges(scheme_options(scheme), ranges),
        )
    return output_path


def scheme_options(scheme: str) -> dict:
    """``quantize_static``'s range options of a scheme: 7-bit weights for CPUs, symmetric 8-bit for TensorRT."""
    if scheme == "cpu":
        return {"reduce_range": True}
    if scheme == "tensorrt":
        # WeightSymmetric is ORT's default, said so the scheme does not rest on it. TensorRT's parser takes Q/DQ of
        # 8-bit types only, not ORT's int32 bias DequantizeLinear: biases stay float (TensorRT fuses them itself).
        # ORT's quantizer notes that TensorRT wants a Q/DQ pair per consumer (DedicatedQDQPair).
        options = {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "DedicatedQDQPair": True,
        }
        return {"reduce_range": False, "extra_options": options}
    raise ConfigError(f"onnx_scheme must be one of {', '.join(ONNX_SCHEMES)}, got {scheme!r}")


def _with_ranges(options: dict, ranges: dict | None) -> dict:
    """QAT's ranges pinned, and its weight grid: full 8 bits in every scheme.

    The QAT model trained on symmetric 8-bit weights ([-127, 127], the LiteRT converter's); the ``cpu`` scheme's
    7-bit weights would put the ONNX artifact on another grid than the one QAT learned (measured, MobileNetV2 α 0.35
    on photos10: top-1 agreement with the QAT Keras model 93.2 % with 7-bit weights, 99.6 % with 8-bit, through
    ONNX Runtime on this AVX2 host without VNNI, where 8-bit weights can saturate). Every QAT artifact's agreement
    with its QAT Keras model is measured and reported (``qat_agreement``), so a CPU where they do shows.
    """
    if not ranges:
        return options
    extra = {**options.get("extra_options", {}), "TensorQuantOverrides": ranges}
    return {**options, "reduce_range": False, "extra_options": extra}


def graph_ops(model, layer_names: Sequence[str] = ()) -> list[GraphOp]:
    """The nodes of an ONNX graph; ``node`` is the node name (what ``nodes_to_exclude`` takes)."""
    return [
        GraphOp(node.name, node.op_type, tuple(node.input), tuple(node.output), node_layers(node, model, layer_names))
        for node in model.graph.node
    ]


def node_layers(node, model, layer_names: Sequence[str]) -> tuple[str, ...]:
    """The Keras layers of an ONNX node: from its name, else from its weights' names.

    tf2onnx renames the convolutions it rewrites to NCHW (``Conv__30``); their
    weight initializers keep the scope (``cnn_1/conv1_1/convolution/merged_input:0``).
    """
    found = layers_in_name(node.name, layer_names)
    if found:
        return found
    constants = {init.name for init in model.graph.initializer}
    names: list[str] = []
    for tensor in node.input:
        if tensor in constants:
            names += [layer for layer in layers_in_name(tensor, layer_names) if layer not in names]
    return tuple(names)


def activation_quant_params(qdq_model) -> dict[str, tuple[float, int, int, int]]:
    """Activation tensor → (scale, zero point, qmin, qmax) from the QuantizeLinear nodes of a QDQ model."""
    from onnx import numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in qdq_model.graph.initializer}
    params = {}
    for node in qdq_model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in constants:
            continue
        scale, zero_point = constants.get(node.input[1]), constants.get(node.input[2]) if len(node.input) > 2 else None
        if scale is None or scale.size != 1:
            continue
        kind = np.iinfo(zero_point.dtype if zero_point is not None else np.uint8)
        tensor = node.input[0]
        if tensor.endswith("_QuantizeLinear_Input"):  # a graph output: the quantizer renamed the producer's output
            tensor = tensor[: -len("_QuantizeLinear_Input")]
        params[tensor] = (
            float(scale.reshape(())),
            int(zero_point.reshape(())) if zero_point is not None else 0,
            int(kind.min),
            int(kind.max),
        )
    return params


def _shapes(model) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
    return shapes


def layer_errors(
    pre_path: Path, qdq_path: Path, calibration: CalibrationSet, *, layer_names: Sequence[str], scratch: Path
) -> list[LayerError]:
    """Per-tensor error from float vs QDQ intermediate outputs on calibration images."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    pre, qdq = onnx.load(str(pre_path)), onnx.load(str(qdq_path))
    input_name = pre.graph.input[0].name
    activations = {}
    for name, path in (("float", pre_path), ("qdq", qdq_path)):
        augmented = scratch / f"{name}_augmented.onnx"
        modify_model_output_intermediate_tensors(str(path), str(augmented))
        activations[name] = collect_activations(
            str(augmented), calibration_reader(calibration, input_name, batch_size=DEBUG_IMAGES, limit=DEBUG_IMAGES)
        )
    matching = create_activation_matching(activations["qdq"], activations["float"])
    params, shapes = activation_quant_params(qdq), _shapes(pre)
    producers = {output: node for node in pre.graph.node for output in node.output}
    outputs = {output.name for output in pre.graph.output}  # the probabilities: see tflite.layer_errors
    errors = []
    for tensor, values in matching.items():
        if tensor == input_name or tensor in outputs or "float" not in values or tensor not in params:
            continue
        scale, zero_point, qmin, qmax = params[tensor]
        reference = np.concatenate([np.ravel(v) for v in values["float"]])
        shape = shapes.get(tensor, ())
        channels_first = len(shape) >= 2 and shape[1] > 0 and reference.size % shape[1] == 0
        if channels_first:  # ONNX tensors are NCHW (tf2onnx moves convs to it) or (N, C)
            inner = int(np.prod([d for d in shape[2:]])) if len(shape) > 2 and all(d > 0 for d in shape[2:]) else 1
            reference_nc = reference.reshape(-1, shape[1], inner)
            error = channel_error(reference_nc, scale, zero_point, qmin=qmin, qmax=qmax, channel_axis=1)
        else:
            error = channel_error(reference[:, None], scale, zero_point, qmin=qmin, qmax=qmax)
        accumulated = relative_error(reference, np.concatenate([np.ravel(v) for v in values["post_qdq"]]))
        producer = producers.get(tensor)
        errors.append(
            LayerError(
                tensor=tensor,
                layers=list(
                    node_layers(producer, pre, layer_names)
                    if producer is not None
                    else layers_in_name(tensor, layer_names)
                )
                or [producer.name if producer is not None else tensor],
                op_type=producer.op_type if producer is not None else "?",
                error=round(error, 6),
                accumulated=round(accumulated, 6),
                scale=scale,
            )
        )
    return errors


class OnnxRequantizer:
    """The budget loop's handle on one float ONNX model's QDQ quantization."""

    def __init__(
        self,
        float_path: Path,
        calibration: CalibrationSet,
        info: ModelInfo,
        *,
        method: str,
        per_channel: bool,
        layer_names: Sequence[str],
        scratch: Path,
        scheme: str = "cpu",
    ) -> None:
        import onnx

        self.calibration, self.info, self.method, self.per_channel = calibration, info, method, per_channel
        self.scheme = scheme
        self.layer_names, self.scratch = list(layer_names), scratch
        self.pre_path = preprocess(float_path, scratch / "float_preprocessed.onnx")
        self._pre = onnx.load(str(self.pre_path))
        self._cache = scratch / "calibration_cache.json"
        self._plain: Path | None = None
        self._count = 0
        self.ranges: dict = {}  # TensorQuantOverrides for quantize_qdq (QAT's learned ranges)

    def quantize(self, float_nodes: frozenset[str]) -> Path:
        import onnx

        from edgecls.export.metadata import embed_onnx

        self._count += 1
        path = self.scratch / f"candidate{self._count}.onnx"
        quantize_qdq(
            self.pre_path,
            path,
            self.calibration,
            method=self.method,
            per_channel=self.per_channel,
            nodes_to_exclude=float_nodes,
            cache_path=self._cache,
            scheme=self.scheme,
            ranges=self.ranges,
        )
        onnx.save(
            embed_onnx(onnx.load(str(path)), self.info), str(path)
        )  # scratch: the final file is written atomically later
        if not float_nodes:
            self._plain = path
        return path

    def graph(self) -> list[GraphOp]:
        return graph_ops(self._pre, self.layer_names)

    def layer_errors(self) -> list[LayerError]:
        plain = self._plain or self.quantize(frozenset())
        return layer_errors(self.pre_path, plain, self.calibration, layer_names=self.layer_names, scratch=self.scratch)


# --- this format's whole quantize path ---------------------------------------------------


def _qat_deploy_model(run, taps: dict):
    from edgecls.quantize.qat_graph import deploy_model

    return deploy_model(run.model, taps=taps)


def write_float_onnx(model, path: Path) -> list[str]:
    """``model`` (Keras) as a float ONNX at ``path``; returns its layer names (the budget's candidates)."""
    import onnx

    from edgecls.export.onnx import convert_onnx

    onnx.save(convert_onnx(model), str(path))
    return [layer.name for layer in model.layers]


def requantizer_for(job: QuantizeJob, float_path: Path, layer_names: list[str], scratch: Path) -> OnnxRequantizer:
    """An ``OnnxRequantizer`` over ``float_path`` with ``job.config``'s calibration method, weights and scheme."""
    config = job.config
    return OnnxRequantizer(
        float_path,
        job.calibration,
        job.info,
        method=config.method,
        per_channel=config.per_channel,
        layer_names=layer_names,
        scratch=scratch,
        scheme=config.onnx_scheme,
    )


def quantize_onnx(job: QuantizeJob) -> QuantizedArtifact:
    """QDQ INT8 ONNX artifact of the Keras model (or of the float ``.onnx`` source), held to the budget."""
    import onnx

    from edgecls.export.metadata import embed_onnx
    from edgecls.export.onnx import write_onnx_proto

    started = time.time()
    config = job.config
    float_path = job.work / "float.onnx"
    if job.keras_model is not None:
        # --qat: the QAT model's folded float weights; its learned ranges are pinned below
        taps: dict = {}
        model = job.keras_model if job.qat is None else _qat_deploy_model(job.qat, taps)
        layer_names = write_float_onnx(model, float_path)
    else:
        float_path.write_bytes(job.source.read_bytes())
        layer_names = []
    fp32_size = embed_onnx(onnx.load(str(float_path)), job.info).ByteSize()
    requantizer = requantizer_for(job, float_path, layer_names, job.work)
    if job.qat is not None:
        from edgecls.quantize.qat import onnx_ranges

        requantizer.ranges = onnx_ranges(
            job.qat, model, taps, requantizer.pre_path, job.calibration.images, scratch=job.work
        )
    outcome = job.run_budget(requantizer)
    info = job.final_info(outcome).with_provenance(onnx_scheme=config.onnx_scheme)  # the device reads how it was made
    written = write_onnx_proto(onnx.load(str(outcome.path)), job.final, info)
    weights = "per-channel" if config.per_channel else "per-tensor"
    if config.onnx_scheme == "tensorrt":
        ranges = f"symmetric {weights} int8 weights (full 8 bits), symmetric int8 activations"
    else:
        ranges = f"{weights} int8 weights in a 7-bit range (reduce_range), int8 activations"
        if requantizer.ranges:  # QAT's (see _with_ranges)
            ranges = f"{weights} int8 weights (full 8 bits: the QAT grid), int8 activations"
    calibrated = "QAT ranges" if job.qat is not None else f"{config.method} calibration"
    scheme = f"QDQ INT8 (onnxruntime.quantization), {config.onnx_scheme} scheme: {ranges} ({calibrated}), float32 input"
    return artifact_record(
        written,
        fmt="onnx",
        precision="int8",
        io="float",
        scheme=scheme,
        fp32_size=fp32_size,
        outcome=outcome,
        started=started,
        input={"dtype": "float32", "scale": 0.0, "zero_point": 0},
    )
