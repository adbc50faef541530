"""Quantization-aware training (issue 27): fake quantization placed where the converter quantizes, BatchNorm
folded as it folds, a QAT run that converts to integer-only TFLite and to a Q/DQ ONNX carrying its ranges,
and prune → QAT → export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.quantize.fake_quant import quant_params

runner = CliRunner()
SIZE = 32  # the registry networks' smallest input
# A converted scale is a float32 of the float64 the quantizer computes: equal within float32 rounding (~6e-8);
# 1e-5 relative leaves room for the converter's own float32 arithmetic and still tells two layers' ranges apart.
SCALE_RTOL = 1e-5


# The registry-model tests' images: random pixels, one set for all of them, so that each model is built (and traced,
# and written for the converter) once for the module; the BatchNorm statistics, the QAT ranges and the converter's
# calibration all come from these 16.
IMAGES = np.random.default_rng(0).integers(0, 256, (16, SIZE, SIZE, 3)).astype(np.uint8)


def calibrated_model(name: str, images: np.ndarray):
    """A registry model whose BatchNorm statistics are those of ``images``: activations of order 1 throughout.

    With the initial statistics (mean 0, variance 1) a random deep network's activations shrink to ~0 and
    every range collapses, which would prove nothing about placement.
    """
    import keras

    from edgecls.models import build_model

    keras.utils.set_random_seed(0)
    options = {"alpha": 0.35} if name == "mobilenetv2" else {}
    model = build_model(name, num_classes=3, image_size=(SIZE, SIZE), channels=3, **options)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # one training-mode call sets the moving statistics to this batch's
    model(images.astype(np.float32), training=True)
    return model


class RegistryModels:
    """The registry models the graph tests take, each made once for the module and never changed by a test (one
    that changes a model builds its own): the float model of a name (``calibrated_model`` on ``IMAGES``), its QAT
    twin per weight granularity (ranges initialised on ``IMAGES``), and each one's converter source, whose SavedModel
    is written once for all its conversions. Building, tracing and writing them is most of these tests' time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._float: dict[str, object] = {}
        self._qat: dict[tuple[str, bool], tuple] = {}
        self._sources: dict[tuple[str, bool | None], object] = {}

    def float_model(self, name: str):
        if name not in self._float:
            self._float[name] = calibrated_model(name, IMAGES)
        return self._float[name]

    def qat(self, name: str, per_channel: bool):
        """(QAT model, placement) of ``name``'s float model, its ranges initialised on ``IMAGES``."""
        from edgecls.quantize.qat import initialize_ranges
        from edgecls.quantize.qat_graph import build_qat_model

        key = (name, per_channel)
        if key not in self._qat:
            qat, placement = build_qat_model(self.float_model(name), per_channel=per_channel)
            initialize_ranges(qat, IMAGES)
            self._qat[key] = qat, placement
        return self._qat[key]

    def source(self, name: str, per_channel: bool | None = None):
        """The converter source of ``name``'s float model (``per_channel`` None) or of its QAT model."""
        from edgecls.quantize.tflite import converter_source

        key = (name, per_channel)
        if key not in self._sources:
            model = self.float_model(name) if per_channel is None else self.qat(name, per_channel)[0]
            self._sources[key] = converter_source(model, folder=self.folder / f"{name}-{per_channel}")
        return self._sources[key]


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> RegistryModels:
    return RegistryModels(tmp_path_factory.mktemp("qat-registry-models"))


def infer(model, pixels: np.ndarray):
    """``model`` on ``pixels``, called eagerly (inference): ``predict`` would first trace a QAT MobileNetV2 (~5,000
    ops) into a graph, 20-30 s on this host and most of a test; two calls compared are made alike."""
    import keras

    result = model(pixels.astype(np.float32), training=False)
    return [keras.ops.convert_to_numpy(value) for value in result] if isinstance(result, list) else np.asarray(result)


def same_ops(qat: dict[str, int], ptq: dict[str, int]) -> bool:
    """Op for op, counting a SUB of a constant (Normalization's x - mean) as the ADD of its negative."""

    def merged(counts):
        counts = dict(counts)
        counts["ADD"] = counts.get("ADD", 0) + counts.pop("SUB", 0)
        return counts

    return merged(qat) == merged(ptq)


def tflite_shape(layer) -> tuple[int, ...]:
    """How TFLite stores a QuantConv's kernel: CONV_2D (out, kh, kw, in), DEPTHWISE (1, kh, kw, in·multiplier)."""
    kh, kw, channels_in, last = layer.kernel_shape
    return (last, kh, kw, channels_in) if layer.kind == "conv2d" else (1, kh, kw, channels_in * last)


def calibration_of(images: np.ndarray):
    from edgecls.quantize.calibration import CalibrationSet

    return CalibrationSet(
        folder="memory",
        images=images,
        labels=np.zeros(len(images), dtype=np.int64),
        sources=[],
        class_names=(),
        channel_order="RGB",
    )


def test_quant_params_are_tensorflows_fake_quant_grid():
    """``quant_params`` (what the reports, the test below and the ONNX ranges use) is the grid the op rounds to."""
    import tensorflow as tf

    # Not (-1, 1): its zero point is exactly 127.5, which the op (float32) and the converter (float64) may round
    # apart; qat_graph keeps the one range where that happens (pixels x/127.5 - 1) off the tie.
    for low, high in ((-0.37, 2.9), (0.0, 6.0), (-1.0, 1.2), (0.2, 5.0), (-3.0, -0.5)):
        scale, zero_point = quant_params(low, high)
        values = np.linspace(min(low, 0.0) - 1, high + 1, 5001, dtype=np.float32)
        rounded = tf.quantization.fake_quant_with_min_max_vars(values, min(low, 0.0), max(high, 0.0)).numpy()
        grid = (np.arange(-128, 128) - zero_point) * scale
        nearest = np.abs(rounded[:, None] - grid[None, :]).min(axis=1)
        assert nearest.max() < 1e-5 * scale * 255, (low, high)
        assert np.isclose(rounded.min(), grid[0], rtol=1e-5) and np.isclose(rounded.max(), grid[-1], rtol=1e-5)


def test_fake_quant_rounds_to_tensorflows_grid_and_writes_level_times_step():
    """``fake_quant`` is TensorFlow's fake-quant grid: the same levels as the op (but for a value within float32
    rounding of a half level, which it decides from the value itself), each written as level × step, clamped to
    the nudged range, 255 steps (254 and ±127 for narrow-range weights, per channel), straight-through gradient
    inside the range only. Under ``converter_ops()`` it is the op itself, which the converter reads."""
    import tensorflow as tf

    from edgecls.quantize.fake_quant import converter_ops, fake_quant

    for low, high in ((-0.37, 2.9), (-30.2, 250.7), (0.0, 6.0), (-3.0, -0.0)):
        values = np.linspace(low - 1, high + 1, 20001, dtype=np.float32)
        ours = np.asarray(fake_quant(values, low, high))
        theirs = tf.quantization.fake_quant_with_min_max_vars(values, low, high).numpy()
        step = (np.float32(high) - np.float32(low)) / np.float32(255)
        levels, their_levels = np.round(ours / step), np.round(theirs / step)
        assert np.abs(levels - their_levels).max() <= 1 and np.mean(levels == their_levels) > 0.999, (low, high)
        np.testing.assert_array_equal(ours, levels.astype(np.float32) * step)
        assert levels.max() - levels.min() == 255
        with converter_ops():
            np.testing.assert_array_equal(np.asarray(fake_quant(values, low, high)), theirs)

    kernel = np.random.default_rng(0).normal(0, 0.2, (3, 3, 4, 5)).astype(np.float32)
    amax = np.abs(kernel).max(axis=(0, 1, 2))
    ours = np.asarray(fake_quant(kernel, -amax, amax, narrow_range=True, per_channel=True))
    theirs = tf.quantization.fake_quant_with_min_max_vars_per_channel(kernel, -amax, amax, narrow_range=True).numpy()
    levels = np.round(ours / (amax / np.float32(127)))
    assert (
        levels.min() >= -127 and levels.max() <= 127 and np.array_equal(np.abs(levels).max(axis=(0, 1, 2)), [127] * 5)
    )
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)

    inputs = tf.constant([-5.0, -0.2, 1.0, 2.8, 9.0])
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        rounded = fake_quant(inputs, -0.37, 2.9)
    np.testing.assert_array_equal(tape.gradient(rounded, inputs).numpy(), [0.0, 1.0, 1.0, 1.0, 0.0])


def test_qat_trains_photographs_through_randaugment_and_digits_unaugmented(tmp_path):
    from edgecls.quantize.qat import qat_augment

    assert qat_augment(str(tmp_path)) == ("flip", "rotate", "zoom", "randaugment")
    assert qat_augment("digits") == ()  # a flipped 2 is not a 2; RandAugment needs colour frames


@pytest.mark.slow  # a QAT MobileNetV2 (~5,000 ops): 10-30 s to build and run, off the fast lane
def test_batchnorm_fold_and_deploy_model_compute_the_float_model(registry):
    """Every BatchNorm is folded, with its moving statistics, so that ``deploy_model`` (the folded weights in
    plain layers, without rounding: the ONNX export's source) computes the float model."""
    from edgecls.quantize.qat_graph import activation_quantizers, deploy_model

    model = registry.float_model("mobilenetv2")
    qat, placement = registry.qat("mobilenetv2", per_channel=True)
    batchnorms = {layer.name for layer in model.layers if type(layer).__name__ == "BatchNormalization"}
    assert {bn for _, bn in placement.folded} == batchnorms and len(batchnorms) == 52
    reference = infer(model, IMAGES)
    deployed = infer(deploy_model(qat), IMAGES)
    assert np.abs(deployed - reference).max() < 1e-4
    assert len(activation_quantizers(qat)) == len(placement.quantizers) > 50
    assert not any(type(layer).__name__ == "BatchNormalization" for layer in deploy_model(qat).layers)


@pytest.mark.slow  # a QAT MobileNetV2 (~5,000 ops): 10-30 s to build and run, off the fast lane
def test_a_saved_qat_model_loads_back_computing_what_it_computed(registry, tmp_path):
    """``model.save`` then ``load_qat_model``: the strides come back from the config as lists and each
    convolution's bias grid (its input quantizer's step, a link the file does not hold) is found again."""
    from edgecls.quantize.fake_quant import QuantConv
    from edgecls.quantize.qat_graph import load_qat_model

    qat, _ = registry.qat("mobilenetv2", per_channel=False)
    qat.save(tmp_path / "qat.keras")
    loaded = load_qat_model(tmp_path / "qat.keras")

    def linked(model):
        return [layer.input_scale is not None for layer in model.layers if isinstance(layer, QuantConv)]

    assert linked(loaded) == linked(qat) and sum(linked(qat)) > 30
    assert np.array_equal(infer(loaded, IMAGES), infer(qat, IMAGES))


@pytest.mark.slow  # a QAT MobileNetV2 (~5,000 ops): 10-30 s to build and run, off the fast lane
def test_snapping_writes_every_folded_weight_onto_its_level_and_changes_no_output(registry):
    """After QAT the folded kernels are written onto their INT8 levels (the biases onto INT32 ones): a weight left on a
    rounding boundary (put there by hand) is on a level afterwards, as is every other, and the QAT model computes
    what it computed."""
    from edgecls.quantize.fake_quant import WEIGHT_QMAX, QuantConv, weight_amax
    from edgecls.quantize.qat import initialize_ranges, snap_to_grid
    from edgecls.quantize.qat_graph import build_qat_model

    qat, _ = build_qat_model(registry.float_model("mobilenetv2"), per_channel=False)  # its own: snapping changes it
    initialize_ranges(qat, IMAGES)
    layer = next(layer for layer in qat.layers if isinstance(layer, QuantConv) and layer.kind == "conv2d")
    kernel = np.asarray(layer.folded()[0])
    step = float(np.asarray(weight_amax(kernel, per_channel=False))) / WEIGHT_QMAX
    factor = kernel.reshape(-1)[1] / np.asarray(layer.kernel).reshape(-1)[1]
    raw = np.asarray(layer.kernel).copy()
    raw.reshape(-1)[1] = (np.floor(kernel.reshape(-1)[1] / step) + 0.5) * step / factor  # on a boundary
    layer.kernel.assign(raw)
    before = infer(qat, IMAGES)
    assert snap_to_grid(qat) >= 1
    for conv in (layer for layer in qat.layers if isinstance(layer, QuantConv)):
        folded = np.asarray(conv.folded()[0], dtype=np.float64)
        flat = np.asarray(conv._flat_kernel(folded)).reshape(-1, conv.channels)
        steps = np.asarray(weight_amax(flat, per_channel=conv._weights_per_channel)) / WEIGHT_QMAX
        assert np.abs(flat / steps - np.round(flat / steps)).max() < 1e-3, conv.name
    assert np.array_equal(infer(qat, IMAGES), before)


@pytest.mark.slow
# EfficientNet-B0 per channel only (its per-tensor conversion adds a minute to CI and places nothing new)
@pytest.mark.parametrize(
    ("name", "per_channel"),
    [(name, per_channel) for name in ("cnn", "mobilenetv2", "mobilenetv3small") for per_channel in (True, False)]
    + [("efficientnetb0", True)],
    ids=lambda value: (
        {True: "per-channel", False: "per-tensor"}.get(value, value) if isinstance(value, bool) else value
    ),
)
def test_fake_quant_placement_matches_the_converted_graph(registry, name, per_channel):
    """The converter makes the same graph from the QAT model as from the float model (op for op), integer-only,
    and every INT8 tensor in it carries a QAT range: each activation tensor's scale and zero point are one
    quantizer's (scale within SCALE_RTOL, zero point exact), each quantizer lands on a tensor, and each
    convolution's INT8 weights are its fake-quantized folded kernel."""
    import keras
    import tensorflow as tf

    from edgecls.adapters.tflite_graph import TFLiteGraph
    from edgecls.quantize.budget import layers_in_name
    from edgecls.quantize.fake_quant import QuantConv
    from edgecls.quantize.qat_graph import activation_quantizers
    from edgecls.quantize.tflite import convert_int8

    qat, _ = registry.qat(name, per_channel)
    calibration = calibration_of(IMAGES)
    model_bytes = convert_int8(registry.source(name, per_channel), calibration, per_channel=per_channel)
    graph = TFLiteGraph.from_bytes(model_bytes)
    ptq = TFLiteGraph.from_bytes(convert_int8(registry.source(name), calibration, per_channel=per_channel))
    assert same_ops(graph.op_counts(), ptq.op_counts())
    assert graph.float_ops() == []

    ranges = {q.name: q.quant_params() for q in activation_quantizers(qat)}
    tensors = {t.index: t for op in graph.ops for t in op.outputs if t.scale}
    tensors.update({t.index: t for t in graph.inputs})

    def matches(tensor, scale, zero_point):
        return np.isclose(tensor.scale[0], scale, rtol=SCALE_RTOL) and tensor.zero_point[0] == zero_point

    unplaced = [
        t.name for t in tensors.values() if t not in graph.inputs and not any(matches(t, *r) for r in ranges.values())
    ]
    assert unplaced == []
    lost = [q for q, r in ranges.items() if not any(matches(t, *r) for t in tensors.values())]
    assert lost == []

    convolutions = {layer.name: layer for layer in qat.layers if isinstance(layer, QuantConv)}
    interpreter = tf.lite.Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    checked = set()
    for op in graph.ops:
        if op.op_type not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        weights = op.inputs[1]
        found = [
            n
            for n in layers_in_name(weights.name, list(convolutions))
            if n in convolutions and tflite_shape(convolutions[n]) == tuple(weights.shape)
        ]
        if not found:
            continue
        kernel = keras.ops.convert_to_numpy(convolutions[found[0]].quantized_kernel())
        # TFLite stores a CONV_2D kernel as (out, kh, kw, in), scales on axis 0; a DEPTHWISE one as
        # (1, kh, kw, in·multiplier), scales on axis 3
        if op.op_type == "CONV_2D":
            kernel, axis = np.transpose(kernel, (3, 0, 1, 2)), 0
        else:
            kernel, axis = kernel.reshape(1, kernel.shape[0], kernel.shape[1], -1), 3
        # compare INT8 levels: the converter may fold a constant scale into the kernel (the cnn's Rescaling
        # 1/255 goes into conv1), which moves the scales, not the levels
        reduce = tuple(a for a in range(4) if a != axis) if per_channel else None
        step = np.maximum(np.abs(kernel).max(axis=reduce, keepdims=True), 1e-12) / 127.0
        levels = np.round(kernel / step)
        stored = interpreter.get_tensor(weights.index).astype(np.float64)
        # the converter rounds the folded kernel in float64 with the fake-quant op's range, the op in float32:
        # a weight within float32 rounding of a half level may land one level apart
        mismatch = np.abs(stored - levels)
        assert mismatch.max() <= 1 and np.mean(mismatch > 0) <= 1e-3, (found[0], np.mean(mismatch > 0))
        assert len(weights.scale) == (kernel.shape[axis] if per_channel else 1)
        checked.add(found[0])
    assert len(checked) >= min(3, len(convolutions)), sorted(checked)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "until", "per_channel"),
    [
        ("mobilenetv2", "_add_quant", True),
        ("mobilenetv2", "_add_quant", False),
        ("efficientnetb0", "_se_squeeze_quant", False),  # per tensor: every value to the level, the strict case
    ],
    ids=["mobilenetv2-per-channel", "mobilenetv2-per-tensor", "efficientnetb0-per-tensor"],
)
def test_the_qat_model_computes_what_the_int8_tflite_computes(registry, name, until, per_channel):
    """Every activation tensor of the QAT model up to MobileNetV2's first residual Add, or EfficientNet-B0's first
    squeeze-excite average, is the INT8 TFLite's to the level (biases on the converter's INT32 grid, input × weight
    step; ImageNet's per-channel mean and 1/std on the grid the converter stores them on): per tensor all of them,
    per channel all but under 1 %. Before the bias grid, 6 % of a MobileNetV2 block's values were off, by up to 8
    levels; before the constants' grid, 8 % of EfficientNet-B0's normalised pixels. (Past an Add or a MEAN, their
    fixed-point rescaling moves values near a rounding boundary; the end-to-end check is the top-1 agreement.)"""
    import keras
    import tensorflow as tf

    from edgecls.quantize.qat_graph import activation_quantizers
    from edgecls.quantize.tflite import convert_int8

    images = IMAGES
    qat, _ = registry.qat(name, per_channel)
    model_bytes = convert_int8(
        registry.source(name, per_channel), calibration_of(images), per_channel=per_channel, io="uint8"
    )
    interpreter = tf.lite.Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    quantizers = activation_quantizers(qat)
    expected = infer(keras.Model(qat.inputs, [q.output for q in quantizers]), images)
    tensors = [t for t in interpreter.get_tensor_details() if t["quantization"][0] and len(t["shape"]) > 1]
    outputs: dict[int, list[np.ndarray]] = {}
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        for t in tensors:
            scale, zero_point = t["quantization"]
            values = (interpreter.get_tensor(t["index"]).astype(np.float64) - zero_point) * scale
            outputs.setdefault(t["index"], []).append(values)
    stop = next(i for i, q in enumerate(quantizers) if q.name.endswith(until))
    assert stop >= 5
    for quantizer, values in list(zip(quantizers, expected))[:stop]:
        scale, zero_point = quantizer.quant_params()
        same_grid = [
            np.concatenate(outputs[t["index"]])
            for t in tensors
            if np.isclose(t["quantization"][0], scale, rtol=SCALE_RTOL)
            and t["quantization"][1] == zero_point
            and tuple(t["shape"][1:]) == values.shape[1:]
        ]
        assert same_grid, quantizer.name
        levels = min((np.abs(found - values) / scale for found in same_grid), key=np.mean)
        # per channel, a weight within float32 rounding of a half level may round one level apart in the converter
        # (float64): a few values are off, and the next layers carry it on
        off = float(np.mean(levels > 0.01))
        assert off < (1e-2 if per_channel else 1e-6), (quantizer.name, levels.max(), off)


@pytest.mark.slow
def test_the_budget_can_keep_any_layer_of_a_qat_tflite_in_float(registry, tmp_path):
    """Calibrated, a QAT model is INT8 past its first fake-quant op, where neither the debugger nor the converter's
    denylist reach (the budget saw 1 tensor of a cnn's 9). ``QatTFLiteRequantizer`` calibrates the folded float
    weights and gives each rounded tensor its learned range: quantized whole, that is the fake-quant conversion op
    for op, every output's scale (within SCALE_RTOL) and zero point; the per-layer errors cover every activation
    tensor; and keeping one in the middle in float floats its own ops, the rest on QAT's grid."""
    from edgecls.adapters.tflite_graph import TFLiteGraph
    from edgecls.quantize.budget import float_nodes_for
    from edgecls.quantize.tflite import QatTFLiteRequantizer, requantize
    from edgecls.runtime.metadata import ModelInfo

    qat, _ = registry.qat("mobilenetv2", per_channel=True)
    info = ModelInfo(("a", "b", "c"), (SIZE, SIZE), 3)
    requantizer = QatTFLiteRequantizer(
        qat,
        calibration_of(IMAGES),
        info,
        io="int8",
        per_channel=True,
        scratch=tmp_path,
        source=registry.source("mobilenetv2", per_channel=True),  # the plain conversion: placement's SavedModel
    )
    plain = TFLiteGraph.read(requantizer.quantize(frozenset()))
    assert plain.float_ops() == []
    same_model = TFLiteGraph.from_bytes(requantize(requantizer.calibrated, io="int8", per_channel=True))
    assert [op.op_type for op in same_model.ops] == [op.op_type for op in plain.ops]
    for ours, theirs in zip(same_model.ops, plain.ops):
        ours, theirs = ours.outputs[0], theirs.outputs[0]
        assert np.allclose(ours.scale, theirs.scale, rtol=SCALE_RTOL) and ours.zero_point == theirs.zero_point
    errors = requantizer.layer_errors()
    activations = [t for op in plain.ops for t in op.outputs if t.scale and t not in plain.outputs]
    assert len(errors) == len(activations) > 60

    middle = errors[len(errors) // 2]
    nodes = float_nodes_for(middle.tensor, requantizer.graph())
    kept = TFLiteGraph.read(requantizer.quantize(frozenset(nodes)))
    computed = [op for op in kept.float_ops() if op.op_type not in ("QUANTIZE", "DEQUANTIZE")]
    assert computed and {op.outputs[0].name for op in computed} <= nodes
    assert any(middle.tensor in (t.name for t in op.outputs) for op in computed)
    grid = [(t.scale[0], t.zero_point[0]) for op in plain.ops for t in op.outputs if t.scale]

    def on_the_grid(tensor):
        return any(np.isclose(tensor.scale[0], s, rtol=SCALE_RTOL) and tensor.zero_point[0] == z for s, z in grid)

    integer = [op for op in kept.ops if op.computes_in_integer]
    assert len(integer) >= len(plain.ops) - 2 * len(nodes) - 4
    assert [op.op_type for op in integer if not on_the_grid(op.outputs[0])] == []


# --- a QAT run end to end: small folder, integer-only TFLite, ONNX with the learned ranges, pruned model ------


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """A cnn trained (10 epochs, 16 px) on two easy classes of 24 images each, and its calibration folder: confident
    enough (top-1 1.0, no close calls) that its INT8 artifacts can be held to agree with the QAT Keras model on
    every image (at 3 epochs, one run's INT8 TFLite agreed with it on 90 % of the evaluation images)."""
    from conftest import write_png

    from edgecls.quantize.calibration import CalibDataConfig, make_calibration_folder
    from edgecls.train import TrainConfig, train

    root = tmp_path_factory.mktemp("qat-shapes")
    rng = np.random.default_rng(0)
    for label, level in (("bright", 220), ("dark", 30)):
        for i in range(24):
            image = rng.integers(90, 160, size=(40, 40, 3), dtype=np.uint8)
            image[10:30, 10:30] = level
            write_png(root / "shapes" / label / f"{i:02d}.png", image)
    folder = root / "shapes"
    config = TrainConfig(
        data=str(folder), model="cnn", img_size=16, epochs=10, batch_size=8, patience=0, out=str(root / "run")
    )
    trained = train(config)
    calib = make_calibration_folder(CalibDataConfig(source=str(folder), out=str(root / "calib"), n=32))
    return folder, Path(trained.model_path), Path(calib.out), root


def qat_config(folder: Path, calib: Path, out: Path, **options):
    from edgecls.quantize import QuantizeConfig

    return QuantizeConfig(
        calib=str(calib), eval_data=str(folder), qat=True, qat_data=str(folder), qat_epochs=2, out=str(out), **options
    )


def onnx_activation_scales(path: Path) -> list[float]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    scales = []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in constants and node.input[1] in constants:
            scales.append(float(constants[node.input[1]].reshape(-1)[0]))
    return scales


@pytest.mark.slow
def test_qat_on_a_small_folder_makes_integer_tflite_and_onnx_with_its_ranges(shapes_run):
    """The QAT run's TFLite is integer-only (``edgecls info``'s count), both artifacts agree with the QAT Keras
    model, the ONNX carries the ranges QAT learned (the TFLite's activation scales, which the converter took
    from the fake-quant ops), the report puts PTQ beside QAT, and the metadata says how QAT trained."""
    from edgecls.adapters.tflite_graph import TFLiteGraph
    from edgecls.quantize import quantize
    from edgecls.runtime.metadata import read_model_info

    folder, model_path, calib, root = shapes_run
    result = quantize(model_path, qat_config(folder, calib, root / "qat"))
    artifacts = {artifact.format: artifact for artifact in result.artifacts}
    tflite = TFLiteGraph.read(artifacts["tflite"].path)
    assert tflite.float_ops() == [] and artifacts["tflite"].float_ops == 0 and artifacts["tflite"].integer_ops > 0
    for artifact in artifacts.values():
        assert artifact.qat_agreement >= 0.99 and artifact.ptq_top1 is not None and artifact.float_layers == []
        assert "QAT" in artifact.scheme
        provenance = read_model_info(artifact.path).provenance
        assert provenance["qat"]["epochs"] == 2 and provenance["qat"]["split"] == "train"
    assert len(result.qat["placement"]["folded_batchnorms"]) == 3 and result.qat["warnings"] == []
    # the report's worst tensors reach past the first fake-quant op in both formats (QatTFLiteRequantizer)
    assert len(artifacts["tflite"].worst_layers) == len(artifacts["onnx"].worst_layers) == 5
    learned = [t.scale[0] for op in tflite.ops for t in op.outputs if t.scale and op.op_type in ("CONV_2D", "MEAN")]
    onnx_scales = onnx_activation_scales(Path(artifacts["onnx"].path))
    assert len(learned) == 4
    for scale in learned:  # each conv block's and the pooling's range: the same in both artifacts
        assert any(np.isclose(scale, other, rtol=1e-6) for other in onnx_scales), (scale, onnx_scales)
    report = Path(result.report_markdown).read_text()
    assert "Quantization-aware training: 2 epochs" in report and "| PTQ top-1 (plain) |" in report


@pytest.mark.slow
def test_the_qat_command_draws_its_epochs_on_stderr_and_prints_json_on_stdout(shapes_run):
    """``edgecls quantize --qat`` as a user runs it: minutes of fine-tuning drawn epoch by epoch on stderr, the
    result as one JSON object on stdout, the QAT TFLite integer-only."""
    folder, model_path, calib, root = shapes_run
    out = root / "cli-qat"
    arguments = ["quantize", str(model_path), "--qat", "--calib", str(calib), "--data", str(folder)]
    arguments += ["--eval-data", str(folder), "--qat-epochs", "2", "--format", "tflite", "--out", str(out), "--json"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.stderr
    assert "epoch 1/2" in result.stderr and "epoch 2/2" in result.stderr
    document = json.loads(result.stdout)
    assert document["qat"]["epochs"] == 2 and document["qat"]["keras_top1"] is not None
    (artifact,) = document["artifacts"]
    assert artifact["format"] == "tflite" and artifact["float_ops"] == 0 and artifact["qat_agreement"] >= 0.99
    assert Path(artifact["path"]).parent == out


@pytest.mark.slow
def test_prune_then_qat_then_the_runtime(shapes_run):
    """A model ``edgecls prune`` made goes through QAT: fewer channels in the INT8 graph, integer-only, and the
    runtime's Classifier runs both artifacts with the labels inside them."""
    from edgecls.adapters.tflite_graph import TFLiteGraph
    from edgecls.prune import PruneConfig, prune
    from edgecls.quantize import quantize
    from edgecls.runtime import Classifier

    folder, model_path, calib, root = shapes_run
    pruned = prune(
        model_path,
        PruneConfig(ratio=0.5, data=str(folder), measure_tflite=False, out=str(root / "pruned" / "model.keras")),
    )
    result = quantize(pruned.model_path, qat_config(folder, calib, root / "pruned-qat", per_channel=False))
    artifacts = {artifact.format: artifact for artifact in result.artifacts}
    graph = TFLiteGraph.read(artifacts["tflite"].path)
    assert graph.float_ops() == []
    first_conv = next(op for op in graph.ops if op.op_type == "CONV_2D")
    assert first_conv.inputs[1].shape[0] == 16 and len(first_conv.inputs[1].scale) == 1  # 32 → 16, per tensor
    image = np.random.default_rng(1).integers(90, 160, size=(40, 40, 3), dtype=np.uint8)
    image[10:30, 10:30] = 220
    for artifact in artifacts.values():
        assert artifact.qat_agreement >= 0.99
        classifier = Classifier(artifact.path)
        assert classifier.info.labels == ("bright", "dark")
        assert classifier.predict(image)[0][0] == "bright"


def test_ranges_start_at_the_mean_batch_range_and_whole_set_on_request():
    """``initialize_ranges`` averages each batch's min/max (what the moving average tracks in training); one batch
    of every image gives the whole set's min/max (post-training calibration's range)."""
    import keras

    from edgecls.quantize.qat import initialize_ranges
    from edgecls.quantize.qat_graph import activation_quantizers, build_qat_model

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, use_bias=False, activation="relu", name="conv")(inputs))
    model.get_layer("conv").set_weights([np.ones((1, 1, 1, 1), np.float32)])
    images = np.zeros((64, 4, 4, 1), np.float32)
    images[:32, 0, 0, 0] = 2.0  # batch 1's max 2, batch 2's max 6: mean 4, whole set 6
    images[32:, 0, 0, 0] = 6.0
    qat, _ = build_qat_model(model, per_channel=True)
    tracked = [q for q in activation_quantizers(qat) if q.fixed is None and q.source == "conv"]
    assert initialize_ranges(qat, images, batch=32) >= 1 and tracked
    assert np.isclose(float(tracked[0].range_max.numpy()), 4.0)
    initialize_ranges(qat, images, batch=len(images))
    assert np.isclose(float(tracked[0].range_max.numpy()), 6.0)


def test_finetune_learns_the_teacher_not_the_labels_with_dropout_off():
    """QAT's loss is the cross-entropy to the teacher's softmax: with labels that contradict the teacher the
    student still moves toward the teacher; the dropout it switched off is restored afterwards."""
    import keras

    from edgecls.data.sets import ImageSet
    from edgecls.quantize.qat import finetune

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 8, 8, 3)).astype(np.uint8)

    def net(name):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Rescaling(1 / 255.0)(inputs)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dropout(0.5, name=f"{name}_drop")(x)
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x), name=name)

    teacher, student = net("teacher"), net("student")
    teacher.layers[-1].set_weights([rng.normal(0, 1, (192, 2)).astype(np.float32), np.zeros(2, np.float32)])
    wanted = teacher.predict(images, verbose=0).argmax(1)
    labels = 1 - wanted  # every label says the other class
    train = ImageSet(images, labels.astype(np.int64), [f"image{i}" for i in range(len(images))])
    before = np.mean(student.predict(images, verbose=0).argmax(1) == wanted)
    finetune(student, train, teacher=teacher, epochs=30, learning_rate=1e-2, seed=0, batch_size=8)
    after = np.mean(student.predict(images, verbose=0).argmax(1) == wanted)
    assert after >= 0.9 and after > before, (before, after)
    assert student.get_layer("student_drop").rate == 0.5


def test_qat_options_are_checked(tmp_path):
    from edgecls.base.errors import ConfigError
    from edgecls.quantize import QuantizeConfig

    with pytest.raises(ConfigError, match="--qat trains for INT8"):
        QuantizeConfig(precision="fp16", qat=True).check()
    with pytest.raises(ConfigError, match="--qat-epochs"):
        QuantizeConfig(calib="c", qat=True, qat_epochs=0).check()
    with pytest.raises(ConfigError, match="pass --qat"):
        QuantizeConfig(calib="c", qat_data="folder").check()
    model = tmp_path / "model.keras"
    model.write_bytes(b"")
    result = runner.invoke(app, ["quantize", str(model), "--fp16", "--qat"])
    assert result.exit_code == 2 and "--qat trains for INT8" in result.output


def test_a_qat_artifact_below_plain_ptq_is_warned_about():
    """QAT that scores under PTQ of the same format on the evaluation images gets a warning naming both top-1s and
    the images between them; equal or better gets none, nor does a run without evaluation images."""
    from edgecls.quantize.config import QuantizedArtifact
    from edgecls.quantize.ptq_baseline import qat_below_ptq

    def artifact(top1, ptq_top1):
        return QuantizedArtifact(
            "out/model_int8.tflite", "tflite", "int8", "int8", "QAT", 10, 40, 0.25, top1, 0.98, 1.3, False,
            ptq_top1=ptq_top1,
        )  # fmt: skip

    warning = qat_below_ptq(artifact(0.905, 0.914), 1000)
    assert warning.startswith("out/model_int8.tflite: QAT top-1 90.50% is below plain post-training INT8's 91.40%")
    assert "same 1000 images (9 image(s))" in warning and "without --qat" in warning
    assert qat_below_ptq(artifact(0.914, 0.914), 1000) is None and qat_below_ptq(artifact(0.92, 0.914), 1000) is None
    assert qat_below_ptq(artifact(None, 0.914), 1000) is None and qat_below_ptq(artifact(0.9, None), 1000) is None


def test_pipeline_takes_quantize_qat(tmp_path):
    from conftest import write_pipeline

    from edgecls.base.errors import ConfigError
    from edgecls.pipeline import load_pipeline_config
    from edgecls.pipeline.checks import check_options

    extra = '\n[quantize]\nprecisions = ["int8"]\ncalib = "calib"\nqat = true\nqat_epochs = 2\n'
    check_options(load_pipeline_config(write_pipeline(tmp_path / "p.toml", tmp_path, extra=extra)))
    wrong = extra.replace("qat = true", 'qat = "yes"')
    with pytest.raises(ConfigError, match="qat must be true or false"):
        check_options(load_pipeline_config(write_pipeline(tmp_path / "q.toml", tmp_path, extra=wrong)))
    with pytest.raises(ConfigError, match="unknown option"):
        check_options(
            load_pipeline_config(write_pipeline(tmp_path / "r.toml", tmp_path, extra=extra + "qat_data = 'x'\n"))
        )
