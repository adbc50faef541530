"""One handler per layer type: how channels flow through it, and how to cut it.

A handler answers three questions about its layer class:

- ``trace``: given the channel layouts of the inputs, what is the layout of
  the output, and what does the layer do to channels (produce new ones, act on
  each channel alone, mix them, sum tensors together)? The dependency analysis
  in ``graph.py`` calls it once per layer call, with the ``Tracer`` of ``channels.py``.
- ``resize``/``slice_weights``: the config of the smaller layer and its
  weights, given the kept input and output channel indices.
- ``channel_weights``: the weights that belong to each channel, for the
  importance criteria.

The registry is keyed by the exact layer class: a subclass (a user's custom
``Conv2D``) may change what the layer does, so it is not assumed to behave
like its parent; it blocks its channel groups and the report names it.

>>> [name for name in list_handlers()][:3]  # doctest: +SKIP
['Activation', 'Add', 'AveragePooling2D']
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import numpy as np

from edgecls.adapters.keras_graph import is_ops_class, ops_classes
from edgecls.prune.channels import Layout, Tracer

# Activations that act on each value alone (a channel never sees another).
ELEMENTWISE_ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "gelu",
        "sigmoid",
        "hard_sigmoid",
        "silu",
        "swish",
        "hard_silu",
        "hard_swish",
        "tanh",
        "hard_tanh",
        "softplus",
        "softsign",
        "exponential",
        "mish",
        "log_sigmoid",
        "celu",
        "sparse_plus",
        "squareplus",
        "tanh_shrink",
        "soft_shrink",
        "hard_shrink",
    }
)


class LayerHandler:
    """Base handler; subclasses override what their layer needs."""

    #: names of the layer's variables this handler knows how to slice
    variables: frozenset[str] = frozenset()

    def trace(self, layer: Any, node: Any, inputs: list[Layout], tracer: Tracer) -> list[Layout]:
        raise NotImplementedError

    def resize(self, config: dict[str, Any], out_channels: int) -> dict[str, Any]:
        """The layer config with ``out_channels`` output channels (producers only)."""
        return config

    def resize_pass_through(self, config: dict[str, Any], channels: int) -> dict[str, Any]:
        """The config of a layer that keeps its input's channels, when its config names their count."""
        return config

    def slice_weights(
        self, layer: Any, weights: list[np.ndarray], kept_in: np.ndarray | None, kept_out: np.ndarray | None
    ) -> list[np.ndarray]:
        return weights

    def zero_inputs(self, layer: Any, weights: list[np.ndarray], removed_in: np.ndarray) -> list[np.ndarray]:
        """Weights with the contributions of the ``removed_in`` input channels zeroed (consumers only)."""
        return weights

    def channel_weights(self, layer: Any) -> dict[str, np.ndarray]:
        """``{role: (channels, k) matrix}`` of the weights tied to each channel."""
        return {}

    def unsupported(self, layer: Any, node: Any) -> str | None:
        """Why this particular layer cannot be handled (a config we do not cover), or None."""
        names = {_variable_name(variable) for variable in layer.weights}
        unknown = names - self.variables
        if unknown:
            return (
                f"has variables the pruner does not know ({', '.join(sorted(unknown))}; e.g. a quantized or LoRA layer)"
            )
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return "uses channels_first"
        return None


def _variable_name(variable: Any) -> str:
    return variable.name.split("/")[-1].split(":")[0]


def _take(array: np.ndarray, indices: np.ndarray | None, axis: int) -> np.ndarray:
    return array if indices is None else np.take(array, indices, axis=axis)


def _named_weights(layer: Any, weights: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    return [(_variable_name(variable), value) for variable, value in zip(layer.weights, weights)]


# --- layers that make new channels (and read their input's) ----------------


class _KernelBiasHandler(LayerHandler):
    """A layer with ``kernel`` (…, in, out) and ``bias`` (out): Conv2D and Dense.

    Subclasses name the kernel's input and output axes and the config field
    that holds the output count.
    """

    variables = frozenset({"kernel", "bias"})
    in_axis: int
    out_axis: int
    count_field: str

    def trace(self, layer, node, inputs, tracer):
        tracer.consume(layer, inputs[0])
        return [tracer.produce(layer, getattr(layer, self.count_field))]

    def resize(self, config, out_channels):
        return {**config, self.count_field: int(out_channels)}

    def slice_weights(self, layer, weights, kept_in, kept_out):
        sliced = []
        for name, value in _named_weights(layer, weights):
            if name == "kernel":
                value = _take(_take(value, kept_in, self.in_axis), kept_out, self.out_axis)
            else:
                value = _take(value, kept_out, 0)
            sliced.append(value)
        return sliced

    def zero_inputs(self, layer, weights, removed_in):
        out = []
        for name, value in _named_weights(layer, weights):
            if name == "kernel":
                value = value.copy()
                value[(slice(None),) * self.in_axis + (removed_in,)] = 0.0
            out.append(value)
        return out

    def channel_weights(self, layer):
        kernel = np.asarray(layer.kernel)
        return {"kernel": kernel.reshape(-1, kernel.shape[-1]).T}  # one row per output channel


class Conv2DHandler(_KernelBiasHandler):
    """``Conv2D``: kernel (kh, kw, in, out), bias (out)."""

    in_axis, out_axis, count_field = 2, 3, "filters"

    def unsupported(self, layer, node):
        if getattr(layer, "groups", 1) != 1:
            return f"is a grouped convolution (groups={layer.groups})"
        return super().unsupported(layer, node)


class DenseHandler(_KernelBiasHandler):
    """``Dense`` on the last axis: kernel (in, units), bias (units)."""

    in_axis, out_axis, count_field = 0, 1, "units"


# --- layers with weights that act on each channel alone ---------------------


class DepthwiseConv2DHandler(LayerHandler):
    """``DepthwiseConv2D`` with depth multiplier 1: its channels are its input's."""

    variables = frozenset({"kernel", "bias"})

    def unsupported(self, layer, node):
        if layer.depth_multiplier != 1:
            return f"has depth_multiplier={layer.depth_multiplier} (only 1 is supported)"
        return super().unsupported(layer, node)

    def trace(self, layer, node, inputs, tracer):
        tracer.member(layer, inputs[0])
        return [inputs[0]]

    def slice_weights(self, layer, weights, kept_in, kept_out):
        return [_take(value, kept_in, 2 if name == "kernel" else 0) for name, value in _named_weights(layer, weights)]

    def channel_weights(self, layer):
        kernel = np.asarray(layer.kernel)  # (kh, kw, channels, 1)
        return {"kernel": kernel[:, :, :, 0].reshape(-1, kernel.shape[2]).T}


class BatchNormalizationHandler(LayerHandler):
    """``BatchNormalization`` over the channel axis: every variable is one value per channel."""

    variables = frozenset(
        {"gamma", "beta", "moving_mean", "moving_variance", "moving_stddev", "renorm_mean", "renorm_stddev"}
    )

    def unsupported(self, layer, node):
        rank = len(node.arguments.keras_tensors[0].shape)
        if layer.axis not in (-1, rank - 1):
            return f"normalises axis {layer.axis}, not the channel axis"
        return super().unsupported(layer, node)

    def trace(self, layer, node, inputs, tracer):
        tracer.member(layer, inputs[0])
        return [inputs[0]]

    def slice_weights(self, layer, weights, kept_in, kept_out):
        return [_take(value, kept_in, 0) for value in weights]

    def channel_weights(self, layer):
        return {"gamma": np.asarray(layer.gamma)[:, None]} if layer.scale else {}


# --- layers without weights -------------------------------------------------


class PassThroughHandler(LayerHandler):
    """Layers that keep each channel where it is (activations, pooling, padding, dropout)."""

    def trace(self, layer, node, inputs, tracer):
        return [inputs[0]]


class ActivationHandler(PassThroughHandler):
    """``Activation``: pass-through for element-wise functions; softmax mixes channels."""

    def unsupported(self, layer, node):
        name = getattr(layer.activation, "__name__", str(layer.activation))
        if name not in ELEMENTWISE_ACTIVATIONS:
            return f"applies {name!r}, which mixes channels"
        return None


class RescalingHandler(PassThroughHandler):
    """``Rescaling`` with a scalar scale and offset (a per-channel one cannot be cut)."""

    def unsupported(self, layer, node):
        if not all(isinstance(value, numbers.Number) or np.ndim(value) == 0 for value in (layer.scale, layer.offset)):
            return "scales each channel differently"
        return None


class GlobalPoolingHandler(PassThroughHandler):
    """``GlobalAveragePooling2D``/``GlobalMaxPooling2D``: (N,H,W,C) → (N,C) or (N,1,1,C)."""


class ReshapeHandler(PassThroughHandler):
    """``Reshape`` that only adds or drops unit axes around the channel axis: squeeze-excite's (N,C) → (N,1,1,C).

    Channel c stays channel c; the smaller layer's ``target_shape`` ends in the kept count.
    A reshape that moves values across the channel axis (e.g. (N,4,4,C) → (N,16C)) is refused.
    """

    def unsupported(self, layer, node):
        before = node.arguments.keras_tensors[0].shape[1:]
        after = node.outputs[0].shape[1:]
        units = [d for d in (*before[:-1], *after[:-1])]
        if not before or not after or before[-1] != after[-1] or any(d != 1 for d in units):
            return f"reshapes {tuple(before)} to {tuple(after)}, across the channel axis"
        return None

    def trace(self, layer, node, inputs, tracer):
        tracer.shaped(layer, inputs[0])
        return [inputs[0]]

    def resize_pass_through(self, config, channels):
        return {**config, "target_shape": (*tuple(config["target_shape"])[:-1], channels)}


class FlattenHandler(LayerHandler):
    """``Flatten`` of (N,H,W,C): channel c of position p lands at p*C + c.

    The output layout repeats the input's layout once per position, so the
    following ``Dense`` drops the rows of the removed channels everywhere.
    """

    def trace(self, layer, node, inputs, tracer):
        shape = node.arguments.keras_tensors[0].shape
        positions = int(np.prod([int(d) for d in shape[1:-1]])) if len(shape) > 2 else 1
        return [tuple(inputs[0]) * positions]


class MergeHandler(LayerHandler):
    """Element-wise merges (``Add``, ``Multiply``, …): every input shares one channel set."""

    def unsupported(self, layer, node):
        constants = [value for value in _non_tensor_arguments(node)]
        if any(not (isinstance(value, numbers.Number) or np.ndim(value) == 0) for value in constants):
            return "combines a tensor with a constant array (per-channel constants cannot be cut)"
        return None

    def trace(self, layer, node, inputs, tracer):
        if len(inputs) == 1:  # a tensor and a scalar (x + 3.0): pass-through
            return [inputs[0]]
        return [tracer.merge(inputs, layer)]


class ConcatenateHandler(LayerHandler):
    """``Concatenate`` on the channel axis: output channels are the inputs' channels, offset."""

    def trace(self, layer, node, inputs, tracer):
        rank = len(node.outputs[0].shape)
        if layer.axis in (-1, rank - 1):
            return [tuple(segment for layout in inputs for segment in layout)]
        return [tracer.merge(inputs, layer)]  # stacked along space or batch: channels must agree


class InputLayerHandler(LayerHandler):
    """The model's input: its channels are the pixels' and are never cut."""

    def trace(self, layer, node, inputs, tracer):
        shape = node.outputs[0].shape
        return [tracer.fixed(int(shape[-1]), f"{layer.name}: model input")]


def _non_tensor_arguments(node: Any) -> list[Any]:
    from keras import KerasTensor

    values = list(node.arguments.args) + list(node.arguments.kwargs.values())
    flat = []
    for value in values:
        flat.extend(value if isinstance(value, (list, tuple)) else [value])
    return [
        value
        for value in flat
        if not isinstance(value, KerasTensor) and value is not None and not isinstance(value, bool)
    ]


# --- the registry -------------------------------------------------------------

_PASS_THROUGH = (
    "ReLU",
    "ELU",
    "LeakyReLU",
    "MaxPooling2D",
    "AveragePooling2D",
    "ZeroPadding2D",
    "Cropping2D",
    "UpSampling2D",
    "Dropout",
    "SpatialDropout2D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "Identity",
    "ActivityRegularization",
)
_MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
_OPS_MERGES = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum")


@functools.cache
def _registry() -> dict[type, LayerHandler]:
    import keras

    layers = keras.layers
    registry: dict[type, LayerHandler] = {
        layers.InputLayer: InputLayerHandler(),
        layers.Conv2D: Conv2DHandler(),
        layers.Dense: DenseHandler(),
        layers.DepthwiseConv2D: DepthwiseConv2DHandler(),
        layers.BatchNormalization: BatchNormalizationHandler(),
        layers.Activation: ActivationHandler(),
        layers.Rescaling: RescalingHandler(),
        layers.GlobalAveragePooling2D: GlobalPoolingHandler(),
        layers.GlobalMaxPooling2D: GlobalPoolingHandler(),
        layers.Flatten: FlattenHandler(),
        layers.Reshape: ReshapeHandler(),
        layers.Concatenate: ConcatenateHandler(),
    }
    pass_through = PassThroughHandler()
    for name in _PASS_THROUGH:
        if hasattr(layers, name):
            registry[getattr(layers, name)] = pass_through
    merge = MergeHandler()
    for name in _MERGES:
        registry[getattr(layers, name)] = merge
    # ``x + 3.0`` on a symbolic tensor records a keras.ops operation in the
    # graph (MobileNetV3's hard sigmoid does); those are element-wise too.
    for operation_class in ops_classes(_OPS_MERGES):
        registry[operation_class] = merge
    return registry


def handler_for(layer: Any) -> LayerHandler | None:
    """The handler of ``layer``'s exact class, or ``None`` when there is none."""
    return _registry().get(type(layer))


def list_handlers() -> list[str]:
    """Names of the layer classes the pruner understands (``ops.`` for keras.ops operations)."""
    return sorted({("ops." if is_ops_class(cls) else "") + cls.__name__ for cls in _registry()})
