"""Parameter and multiply-accumulate (MAC) counts of a Keras model.

MACs are counted for the layers that do the arithmetic on a CPU: ``Conv2D``
(grouped too), ``DepthwiseConv2D``, ``SeparableConv2D`` and ``Dense``, at
batch size 1. BatchNormalization folds into the preceding convolution at
export, and pooling, activations and additions cost a few percent at most, so
they are left out; the figure is what channel pruning moves.

>>> params, macs = count_params_and_macs(model)  # doctest: +SKIP
>>> f"{macs / 1e6:.1f} M MACs"  # doctest: +SKIP
'300.8 M MACs'
"""

from __future__ import annotations

import math
from typing import Any

from edgecls.adapters.keras_graph import graph_nodes, is_nested_model


def count_params_and_macs(model: Any) -> tuple[int, int]:
    """``(parameters, MACs per image)`` of a built Keras model.

    Parameters are all weights, trainable or not (BatchNormalization moving
    statistics included), as ``model.count_params()`` counts them. A layer
    called twice counts twice; a nested model counts its own layers.
    """
    return int(model.count_params()), model_macs(model)


def model_macs(model: Any) -> int:
    """MACs per image of every call in ``model``'s graph."""
    return int(sum(layer_macs(model).values()))


def layer_macs(model: Any) -> dict[str, int]:
    """MACs per image of each layer that does the arithmetic (every call of it; a nested model's layers by name).

    >>> sum(layer_macs(model).values()) == model_macs(model)  # doctest: +SKIP
    True
    """
    totals: dict[str, int] = {}
    not_a_graph = TypeError("count_params_and_macs needs a built functional or Sequential Keras model")
    for node in graph_nodes(model, not_a_graph=not_a_graph):
        operation = node.operation
        if is_nested_model(operation):
            for name, macs in layer_macs(operation).items():
                totals[name] = totals.get(name, 0) + macs
            continue
        counter = _COUNTERS.get(type(operation).__name__)
        inputs = node.arguments.keras_tensors
        if counter is not None and inputs and node.outputs:
            totals[operation.name] = totals.get(operation.name, 0) + int(
                counter(operation, inputs[0].shape, node.outputs[0].shape)
            )
    return totals


def _spatial(shape) -> int:
    """Product of the dimensions between batch and channels (1 for a vector)."""
    return math.prod(int(d) for d in shape[1:-1]) if len(shape) > 2 else 1


def _conv_macs(layer, input_shape, output_shape) -> int:
    kernel_h, kernel_w = layer.kernel_size
    groups = getattr(layer, "groups", 1) or 1
    return _spatial(output_shape) * kernel_h * kernel_w * (int(input_shape[-1]) // groups) * int(output_shape[-1])


def _depthwise_macs(layer, input_shape, output_shape) -> int:
    kernel_h, kernel_w = layer.kernel_size
    return _spatial(output_shape) * kernel_h * kernel_w * int(output_shape[-1])


def _separable_macs(layer, input_shape, output_shape) -> int:
    kernel_h, kernel_w = layer.kernel_size
    depthwise_channels = int(input_shape[-1]) * layer.depth_multiplier
    return _spatial(output_shape) * (
        kernel_h * kernel_w * depthwise_channels + depthwise_channels * int(output_shape[-1])
    )


def _dense_macs(layer, input_shape, output_shape) -> int:
    return _spatial(output_shape) * int(input_shape[-1]) * int(output_shape[-1])


_COUNTERS = {
    "Conv2D": _conv_macs,
    "DepthwiseConv2D": _depthwise_macs,
    "SeparableConv2D": _separable_macs,
    "Dense": _dense_macs,
}
