"""Build the smaller model, and the masked original it must agree with.

``rebuild`` edits the functional model's config (fewer ``filters``/``units``
in the producers), instantiates it (every other layer infers its width from
its input, as Keras layers do), and copies the surviving weights in through
the handlers. The architecture, layer names and connections stay the same.

``mask_removed_channels`` is the reference the rebuild is tested against: a
copy of the original in which every consumer ignores the removed channels
(their input weights set to zero). Zeroing the producers' filters instead
would not do: BatchNormalization's beta and moving mean turn a zero channel
into a constant, which the next convolution would still read.

>>> small = rebuild(model, graph, keep)  # doctest: +SKIP
>>> max_abs_difference(mask_removed_channels(model, graph, keep), small) < 1e-4  # doctest: +SKIP
True
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from edgecls.adapters.keras_graph import has_graph
from edgecls.base.errors import ModelError
from edgecls.models import LOGITS_LAYER
from edgecls.prune.channels import ChannelGraph
from edgecls.prune.handlers import handler_for


def as_functional(model: Any) -> Any:
    """A Sequential model as a functional one over the same layers (the pruner needs a config with connections)."""
    import keras

    if isinstance(model, keras.Sequential):
        return keras.Model(_single(model.inputs), _single(model.outputs), name=model.name)
    if not has_graph(model):
        raise ModelError(
            "structured pruning needs a functional or Sequential Keras model; a subclassed model has no graph to "
            "analyse"
        )
    return model


def clone_with_config(model: Any, config: dict[str, Any]) -> Any:
    """Instantiate a functional model from ``config`` (a ``get_config()`` result).

    A user's own layer classes (unknown to the pruner and left as they are) are
    found by name, as ``keras_io.model_from_config`` does.
    """
    from edgecls.adapters.keras_io import model_from_config

    try:
        return model_from_config(model, config)
    except Exception as exc:  # Keras raises ValueError/TypeError with its own message
        raise ModelError(f"cannot rebuild {model.name} from its config ({type(exc).__name__}: {exc})") from exc


def rebuild(model: Any, graph: ChannelGraph, keep: dict[str, np.ndarray]) -> Any:
    """A new model with only the kept channels of each group in ``keep``, weights copied."""
    import keras

    config = copy.deepcopy(model.get_config())
    for layer_data in config["layers"]:
        # the stored input shape would build the layer at its old width
        layer_data.pop("build_config", None)
        record = graph.layers.get(layer_data["name"])
        if record is not None and record.output_group in keep:
            handler = handler_for(model.get_layer(layer_data["name"]))
            layer_data["config"] = handler.resize(layer_data["config"], len(keep[record.output_group]))
        elif record is not None and record.role != "producer" and record.input_layout:
            kept = graph.indices(record.input_layout, keep)
            handler = handler_for(model.get_layer(layer_data["name"]))
            if kept is not None and handler is not None:  # a Reshape whose target_shape names the channels
                layer_data["config"] = handler.resize_pass_through(layer_data["config"], len(kept))
    smaller = clone_with_config(model, config)
    for layer in smaller.layers:
        original = model.get_layer(layer.name)
        weights = original.get_weights()
        if weights:
            layer.set_weights(_sliced_weights(original, weights, graph, keep))
            if isinstance(layer, keras.layers.Normalization):
                # set_weights fills its adapt state; the mean and variance it computes with are derived
                # from that only by finalize_state (what Keras' own loading calls after restoring it)
                layer.finalize_state()
    return smaller


def _sliced_weights(
    layer: Any, weights: list[np.ndarray], graph: ChannelGraph, keep: dict[str, np.ndarray]
) -> list[np.ndarray]:
    record = graph.layers.get(layer.name)
    handler = handler_for(layer)
    if record is None or handler is None or record.role == "other":
        return weights
    kept_in = graph.indices(record.input_layout, keep) if record.input_layout else None
    kept_out = keep.get(record.output_group) if record.role == "producer" else kept_in
    return handler.slice_weights(layer, weights, kept_in, kept_out)


def mask_removed_channels(model: Any, graph: ChannelGraph, keep: dict[str, np.ndarray]) -> Any:
    """A copy of ``model`` whose consumers give zero weight to every removed channel."""
    masked = clone_with_config(model, model.get_config())
    masked.set_weights(model.get_weights())
    for name, weights in masked_layer_weights(model, graph, keep).items():
        masked.get_layer(name).set_weights(weights)
    return masked


def masked_layer_weights(model: Any, graph: ChannelGraph, keep: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """The new weights of every layer that reads a removed channel (its weights for those channels zeroed)."""
    changed = {}
    for name, record in graph.layers.items():
        if record.role != "producer" or not record.input_layout:
            continue
        kept = graph.indices(record.input_layout, keep)
        if kept is None:
            continue
        width = sum(size for _, size in record.input_layout)
        removed = np.setdiff1d(np.arange(width), kept)
        layer = model.get_layer(name)
        changed[name] = handler_for(layer).zero_inputs(layer, layer.get_weights(), removed)
    return changed


def comparison_output(model: Any) -> Any:
    """The model up to its logits when it has a ``logits`` layer (softmax hides differences), else itself."""
    import keras

    try:
        logits = model.get_layer(LOGITS_LAYER).output
    except ValueError:
        return model
    return keras.Model(_single(model.inputs), logits)


def _single(tensors: list[Any]) -> Any:
    """One input as itself, not a one-element list (Keras warns when the call's structure differs)."""
    return tensors[0] if len(tensors) == 1 else tensors


def max_abs_difference(reference: Any, candidate: Any, *, samples: int = 4, seed: int = 0) -> float:
    """Largest |Δ| between two models' logits on random pixels (0..255) of the input's shape."""
    shape = tuple(int(d) for d in reference.input_shape[1:])
    pixels = np.random.default_rng(seed).uniform(0.0, 255.0, size=(samples, *shape)).astype(np.float32)
    expected = np.asarray(comparison_output(reference)(pixels, training=False))
    actual = np.asarray(comparison_output(candidate)(pixels, training=False))
    if expected.shape != actual.shape:
        raise ModelError(f"pruned model output {actual.shape} differs from the original's {expected.shape}")
    return float(np.max(np.abs(expected - actual)))
