"""Fake quantization for Keras 3: the layers a QAT model is built from.

Each layer rounds what the LiteRT converter will round, on the grid it will
use, so that training sees the INT8 model's errors:

- ``ActivationQuantizer``: an activation tensor as one INT8 tensor (per
  tensor, asymmetric by default): ``min``/``max`` tracked as an exponential
  moving average of each training batch's range, as TFMOT's
  ``MovingAverageQuantizer`` does, and frozen at inference. ``symmetric=True``
  gives zero point 0 (TensorRT's activations). ``fixed=(lo, hi)`` pins a range
  the converter fixes itself (LOGISTIC's output: scale 1/256, zero point -128).
- ``QuantConv``: a Conv2D, DepthwiseConv2D or Dense, with the BatchNormalization
  after it folded in the way the converter folds it: kernel × γ/√(σ²+ε) per
  output channel, bias β + (b − μ)·γ/√(σ²+ε), with the *moving* statistics. The
  folded kernel is fake-quantized symmetric in [-127, 127] (narrow range: the
  converter's INT8 weights) per output channel, or per tensor. BatchNorm
  statistics are frozen during QAT (Krishnamoorthi 2018, §3.2: fine-tuning a
  trained model, folding with the statistics inference will use makes the
  trained weights the deployed ones).

Both round with ``fake_quant``: TensorFlow's fake-quant grid (its nudged
zero point, clamp and half-up rounding), with each value's level decided from
the value itself (x / step), as an integer kernel decides it from its
accumulator, and written as level × step. TensorFlow's op decides it from the
bottom of the range, (x − nudged_min) · (1 / step). The two differ only for
values within float32 rounding of a half level, but a squeeze-excite network
carries such differences to its top-1: on step-0 QAT of EfficientNet-B0
(photos10, per channel, 1,000 test images) the QAT Keras model agreed with
its INT8 TFLite (XNNPACK) on 98.5 % of images and with its Q/DQ ONNX on
98.3 % through the op, and on 99.6 % and 99.6 % through ``fake_quant``
(measured end to end; which values it changes is not pinned down). While the
LiteRT converter traces the model (``converter_ops()``), it emits
TensorFlow's op (``keras.quantizers.fake_quant_with_min_max_vars``), the one
the converter reads ranges from.

>>> quantizer = ActivationQuantizer(name="relu1_quant")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
from keras import ops

WEIGHT_QMAX = 127  # narrow-range INT8 weights: [-127, 127], zero point 0 (the converter's per-channel weights)
ACTIVATION_LEVELS = 255  # 8-bit activations: 256 levels, 255 steps
MIN_RANGE = 1e-6  # a range narrower than this (a dead channel, an all-zero tensor) is widened: no division by 0
LOGISTIC_RANGE = (0.0, 255.0 / 256.0)  # what the converter fixes for LOGISTIC/SOFTMAX outputs: scale 1/256, zp -128


_CONVERTER_OPS = contextvars.ContextVar("edgecls_fake_quant_converter_ops", default=False)


@contextlib.contextmanager
def converter_ops() -> Iterator[None]:
    """While the LiteRT converter traces a QAT model: fake quantization as TensorFlow's op, which it reads."""
    token = _CONVERTER_OPS.set(True)
    try:
        yield
    finally:
        _CONVERTER_OPS.reset(token)


def fake_quant(inputs, low, high, *, narrow_range: bool = False, per_channel: bool = False):
    """``inputs`` rounded to the 8-bit grid of [low, high] (per last-axis channel when ``per_channel``).

    The grid is TensorFlow's fake-quant op's: step (high - low) / 255 (254 narrow), zero point rounded to a level
    and the range nudged to it, values clamped to the nudged range and rounded half up; the level is x / step
    (the op computes it from the range's bottom) and the value level × step. Straight-through gradient inside
    the range, none outside (the ranges are tracked, not trained). Under ``converter_ops()``: TensorFlow's op.
    """
    if _CONVERTER_OPS.get():
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs, low, high, num_bits=8, narrow_range=narrow_range, axis=-1 if per_channel else None
        )
    qmin = 1.0 if narrow_range else 0.0
    qmax = float(ACTIVATION_LEVELS)
    low, high = ops.cast(low, "float32"), ops.cast(high, "float32")
    step = ops.stop_gradient((high - low) / (qmax - qmin))
    zero_point = ops.clip(ops.floor(qmin - low / step + 0.5), qmin, qmax)  # std::round of a positive number
    clamped = ops.clip(inputs, (qmin - zero_point) * step, (qmax - zero_point) * step)
    rounded = ops.floor(clamped / step + 0.5) * step
    return clamped + ops.stop_gradient(rounded - clamped)


def quant_params(low: float, high: float) -> tuple[float, int]:
    """(scale, int8 zero point) of a range as TensorFlow's fake-quant op nudges it, and as the converter stores it.

    The range is widened to hold 0 (the converter's rule), the zero point is
    rounded to an integer in [0, 255] (uint8 terms) and shifted to int8.

    >>> quant_params(0.0, 6.0)
    (0.023529411764705882, -128)
    """
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high - low < MIN_RANGE:
        high = low + MIN_RANGE
    scale = (high - low) / ACTIVATION_LEVELS
    zero_point = int(np.clip(np.round(-low / scale), 0, ACTIVATION_LEVELS))
    return scale, zero_point - 128


@keras.saving.register_keras_serializable(package="edgecls")
class ActivationQuantizer(keras.layers.Layer):
    """Fake-quantizes its input to INT8 with a tracked (EMA) range; identity in shape.

    ``decay`` is the EMA's weight on the old range per training step.
    """

    def __init__(
        self,
        *,
        decay: float = 0.99,
        symmetric: bool = False,
        fixed: tuple[float, float] | None = None,
        source: str = "",
        point: str = "output",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.decay, self.symmetric = float(decay), bool(symmetric)
        self.point = point  # which tensor of ``source``: its output, a swish's sigmoid, a conv's pre-activation
        self.fixed = tuple(float(v) for v in fixed) if fixed is not None else None
        self.source = source  # the Keras layer whose output this is (reports, ONNX ranges)
        self.active = True  # read when a function is traced: False only while ranges are observed

    def build(self, input_shape) -> None:
        low, high = self.fixed or (0.0, 0.0)
        self.range_min = self.add_weight(
            name="range_min", shape=(), initializer=keras.initializers.Constant(low), trainable=False
        )
        self.range_max = self.add_weight(
            name="range_max", shape=(), initializer=keras.initializers.Constant(high), trainable=False
        )

    def call(self, inputs, training=None):
        if not self.active:  # range observation (qat.initialize_ranges): the float tensor as it is
            return inputs
        if training and self.fixed is None:
            batch_min = ops.cast(ops.min(inputs), "float32")
            batch_max = ops.cast(ops.max(inputs), "float32")
            self.range_min.assign(self.decay * self.range_min + (1.0 - self.decay) * batch_min)
            self.range_max.assign(self.decay * self.range_max + (1.0 - self.decay) * batch_max)
        low, high = self.bounds(self.range_min, self.range_max)
        return fake_quant(inputs, low, high)

    def bounds(self, low, high):
        """The (min, max) handed to the fake-quant op: holding 0, and symmetric (zero point 0) when asked."""
        low, high = ops.minimum(low, 0.0), ops.maximum(high, 0.0)
        if self.symmetric:
            # [-a·128/127, a] has 255 steps of a/127 and its zero exactly on level 128 (int8 0): TensorRT's grid.
            amax = ops.maximum(ops.maximum(-low, high), MIN_RANGE)
            return -amax * (128.0 / 127.0), amax
        return low, ops.maximum(high, low + MIN_RANGE)

    def scale(self):
        """The INT8 step of this tensor as a tensor: (max - min) / 255 of the bounds (the fake-quant op's nudging
        moves the zero point, not the step)."""
        low, high = self.bounds(self.range_min, self.range_max)
        return (high - low) / ACTIVATION_LEVELS

    def set_range(self, low: float, high: float) -> None:
        """Start the tracked range here (the calibration images' range, as post-training quantization has it)."""
        if self.fixed is None:
            self.range_min.assign(float(low))
            self.range_max.assign(float(high))

    def quant_params(self) -> tuple[float, int]:
        """(scale, int8 zero point) this quantizer's tensor has in the converted model."""
        low, high = self.bounds(self.range_min, self.range_max)
        return quant_params(float(ops.convert_to_numpy(low)), float(ops.convert_to_numpy(high)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "decay": self.decay,
            "symmetric": self.symmetric,
            "fixed": self.fixed,
            "source": self.source,
            "point": self.point,
        }


def weight_amax(kernel, *, per_channel: bool):
    """max |w| per output channel (last axis) or of the whole tensor, at least MIN_RANGE: the weights' range."""
    if per_channel:
        amax = ops.max(ops.abs(kernel), axis=tuple(range(len(kernel.shape) - 1)))
    else:
        amax = ops.max(ops.abs(kernel))
    return ops.maximum(amax, MIN_RANGE)


def fake_quant_weights(kernel, *, per_channel: bool):
    """``kernel`` (last axis = output channels) on the converter's symmetric narrow-range INT8 grid.

    The range is the current max |w| (TFMOT's ``LastValueQuantizer``), per output channel or per tensor.
    """
    amax = weight_amax(kernel, per_channel=per_channel)
    return fake_quant(kernel, -amax, amax, narrow_range=True, per_channel=per_channel)


KINDS = ("conv2d", "depthwise", "dense")


@keras.saving.register_keras_serializable(package="edgecls")
class QuantConv(keras.layers.Layer):
    """A Conv2D / DepthwiseConv2D / Dense with its BatchNormalization folded in and fake-quantized weights.

    Built from the original layers (``from_layers``: strides, padding, dilation
    and weights copied). Its output is linear: an activation the original layer
    had is applied after it, where the converter fuses it.
    """

    def __init__(
        self,
        kind: str,
        base: dict[str, Any],
        kernel_shape: tuple[int, ...],
        *,
        batchnorm: bool = False,
        epsilon: float = 1e-3,
        per_channel: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        # tuples: a saved model's config gives the strides back as lists, which Keras' conv ops refuse
        base = {key: tuple(value) if isinstance(value, list) else value for key, value in base.items()}
        self.kind, self.base, self.kernel_shape = kind, base, tuple(int(d) for d in kernel_shape)
        self.batchnorm, self.epsilon, self.per_channel = bool(batchnorm), float(epsilon), bool(per_channel)
        # () -> the INT8 step of this op's input (its ActivationQuantizer's ``scale``), set from the graph
        # (``qat_graph.link_input_scales``); a function, not the layer, so that Keras does not track the quantizer
        # as a sublayer of this one (nor save it twice)
        self.input_scale = None

    @classmethod
    def from_layers(cls, layer, batchnorm=None, *, per_channel: bool = True) -> QuantConv:
        """The QAT twin of ``layer`` (and of the BatchNormalization ``batchnorm`` after it), weights copied."""
        kind = {"Conv2D": "conv2d", "DepthwiseConv2D": "depthwise", "Dense": "dense"}[type(layer).__name__]
        config = layer.get_config()
        base = {key: config[key] for key in ("strides", "padding", "dilation_rate") if key in config}
        kernel = ops.convert_to_numpy(layer.kernel)
        quant = cls(
            kind,
            base,
            kernel.shape,
            batchnorm=batchnorm is not None,
            epsilon=batchnorm.epsilon if batchnorm is not None else 1e-3,
            per_channel=per_channel,
            name=layer.name,
        )
        quant.build(None)
        quant.kernel.assign(kernel)
        if layer.use_bias:
            quant.bias.assign(ops.convert_to_numpy(layer.bias))
        if batchnorm is not None:
            for target, source in (
                (quant.gamma, batchnorm.gamma),
                (quant.beta, batchnorm.beta),
                (quant.moving_mean, batchnorm.moving_mean),
                (quant.moving_variance, batchnorm.moving_variance),
            ):
                if source is not None:  # BatchNormalization(scale=False) has no gamma: it stays 1
                    target.assign(ops.convert_to_numpy(source).astype("float32"))
        return quant

    @property
    def channels(self) -> int:
        """Output channels of the converted op (a depthwise conv's in × multiplier)."""
        shape = self.kernel_shape
        return shape[-2] * shape[-1] if self.kind == "depthwise" else shape[-1]

    def build(self, input_shape) -> None:
        channels = self.channels
        self.kernel = self.add_weight(name="kernel", shape=self.kernel_shape, initializer="zeros")
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")
        if self.batchnorm:
            self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
            self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")
            self.moving_mean = self.add_weight(
                name="moving_mean", shape=(channels,), initializer="zeros", trainable=False
            )
            self.moving_variance = self.add_weight(
                name="moving_variance", shape=(channels,), initializer="ones", trainable=False
            )
        self.built = True

    def folded(self):
        """(kernel, bias) with the BatchNormalization folded in: what the converter writes, before rounding."""
        kernel, bias = self.kernel, self.bias
        if not self.batchnorm:
            return kernel, bias
        factor = self._fold_factor()
        return kernel * self._per_kernel(factor), self.beta + (bias - self.moving_mean) * factor

    def _fold_factor(self):
        """γ/√(σ²+ε) per output channel: the BatchNormalization's scale, folded into kernel and bias."""
        return self.gamma / ops.sqrt(self.moving_variance + self.epsilon)

    def _per_kernel(self, values):
        """Per-output-channel ``values`` shaped to multiply the kernel (a depthwise kernel is (kh, kw, in,
        multiplier): output channel in·multiplier + m)."""
        return ops.reshape(values, self.kernel_shape[-2:]) if self.kind == "depthwise" else values

    def _weight_step(self, kernel):
        """The INT8 step of the folded ``kernel``: per output channel of the converted op, or per tensor."""
        return weight_amax(self._flat_kernel(kernel), per_channel=self._weights_per_channel) / WEIGHT_QMAX

    def _flat_kernel(self, kernel):
        """The kernel with the converted op's output channels on its last axis (a depthwise's in × multiplier)."""
        if self.kind == "depthwise":
            shape = self.kernel_shape
            return ops.reshape(kernel, (*shape[:-2], shape[-2] * shape[-1]))
        return kernel

    @property
    def _weights_per_channel(self) -> bool:
        # Dense: per tensor always. Per-channel fake quant on a FULLY_CONNECTED's kernel stops the converter
        # ("'tfl.transpose' op has mismatched quantized axes": it transposes the kernel to (out, in) without moving
        # the quantized axis); TFMOT's default_8bit quantizes Dense kernels per tensor too.
        return self.per_channel and self.kind != "dense"

    def quantized_kernel(self):
        """The folded kernel on the INT8 grid, per output channel of the converted op (or per tensor)."""
        kernel, _ = self.folded()
        quantized = fake_quant_weights(self._flat_kernel(kernel), per_channel=self._weights_per_channel)
        return ops.reshape(quantized, self.kernel_shape) if self.kind == "depthwise" else quantized

    def quantized_bias(self, kernel, bias):
        """``bias`` on the converter's INT32 grid: steps of input scale × weight scale (per output channel).

        The converter stores round(bias / (s_in · s_w)); unrounded, the QAT model's outputs sit up to half such a
        step off the INT8 model's, enough to tip values near a rounding boundary (measured: 0.1 % of MobileNetV2's
        first convolution's outputs, and the difference grows through the network). Straight-through gradient.
        """
        if self.input_scale is None:
            return bias
        step = ops.maximum(self.input_scale() * self._weight_step(kernel), 1e-12)
        return bias + ops.stop_gradient(ops.round(bias / step) * step - bias)

    def snap_to_grid(self) -> int:
        """Write the weights back so that the folded kernel and bias lie on their INT8 / INT32 levels; returns how
        many kernel values lay within a hundredth of a step of a rounding boundary (about 2 % of them: a record,
        not a warning).

        QAT's latent weights are continuous: among a network's millions some lie within float32 rounding of a
        rounding boundary, where two implementations of the same rounding (this layer's x / step, TensorFlow's
        fake-quant op that the converter folds, deciding from the range's bottom, ONNX Runtime's quantizer) may
        decide differently. Measured on EfficientNet-B0 (photos10, seed 0, per tensor): 17 weights in 7 layers a
        whole step off the QAT model's in its INT8 TFLite. Snapped, every implementation finds each value on
        its level and the model computes what it computed (the levels are this layer's own rounding).
        """
        kernel, bias = self.folded()
        on_grid_kernel = self.quantized_kernel()
        on_grid_bias = self.quantized_bias(kernel, bias)
        moved = ops.abs(self._flat_kernel(on_grid_kernel) - self._flat_kernel(kernel)) / self._weight_step(kernel)
        near_tie = int(ops.convert_to_numpy(ops.sum(ops.cast(ops.abs(moved - 0.5) < 0.01, "int32"))))
        if not self.batchnorm:
            self.kernel.assign(on_grid_kernel)
            self.bias.assign(on_grid_bias)
            return near_tie
        factor = self._fold_factor()
        factor_k = self._per_kernel(factor)
        # a channel with γ = 0 folds to 0 whatever its kernel: left as it is
        self.kernel.assign(
            ops.where(factor_k != 0, on_grid_kernel / ops.where(factor_k != 0, factor_k, 1.0), self.kernel)
        )
        self.beta.assign(on_grid_bias - (self.bias - self.moving_mean) * factor)
        return near_tie

    def call(self, inputs):
        kernel, bias = self.folded()
        bias = self.quantized_bias(kernel, bias)
        kernel = self.quantized_kernel()
        strides, padding = self.base.get("strides", 1), self.base.get("padding", "valid")
        dilation = self.base.get("dilation_rate", 1)
        if self.kind == "conv2d":
            outputs = ops.conv(inputs, kernel, strides=strides, padding=padding, dilation_rate=dilation)
        elif self.kind == "depthwise":
            outputs = ops.depthwise_conv(inputs, kernel, strides=strides, padding=padding, dilation_rate=dilation)
        else:
            outputs = ops.matmul(inputs, kernel)
        return outputs + bias

    def deploy_layer(self):
        """A plain built Keras layer holding the folded float weights: this layer without the rounding."""
        kernel, bias = (ops.convert_to_numpy(value) for value in self.folded())
        common = {"name": self.name, "use_bias": True}
        if self.kind == "dense":
            layer = keras.layers.Dense(self.channels, **common)
            layer.build((None, self.kernel_shape[0]))
        elif self.kind == "conv2d":
            layer = keras.layers.Conv2D(self.channels, self.kernel_shape[:2], **self.base, **common)
            layer.build((None, None, None, self.kernel_shape[2]))
        else:
            multiplier = self.kernel_shape[-1]
            layer = keras.layers.DepthwiseConv2D(
                self.kernel_shape[:2], depth_multiplier=multiplier, **self.base, **common
            )
            layer.build((None, None, None, self.kernel_shape[2]))
        layer.set_weights([kernel, bias])
        return layer

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kind": self.kind,
            "base": self.base,
            "kernel_shape": self.kernel_shape,
            "batchnorm": self.batchnorm,
            "epsilon": self.epsilon,
            "per_channel": self.per_channel,
        }
