"""Dependency analysis: which channels of a functional Keras model must move together.

Every tensor's last axis is described by a *layout*: a sequence of segments,
each a run of channels from one *channel space*. A ``Conv2D`` or ``Dense``
opens a new space (its filters); pass-through layers, BatchNormalization and
depthwise convolutions keep their input's layout; ``Concatenate`` joins
layouts with offsets; an element-wise merge (``Add``, ``Multiply``) unites
the spaces it sums, because a channel removed from one summand must be
removed from all. Spaces united this way form a *channel group*: one set of
kept indices applies to every producer, member and consumer in it.

A group is left alone (blocked) when anything in it cannot be cut: the model
input, the model outputs (the classifier's classes), a layer type without a
handler, a layer the user excluded. Each block keeps its reason for the report.

>>> graph = analyze(model)  # doctest: +SKIP
>>> [(g.name, g.channels, g.prunable) for g in graph.groups][:2]  # doctest: +SKIP
[('conv1', 32, True), ('conv2', 64, True)]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from edgecls.adapters.keras_graph import graph_nodes as keras_graph_nodes
from edgecls.base.errors import ConfigError, ModelError
from edgecls.models import LOGITS_LAYER
from edgecls.prune.channels import ChannelGraph, ChannelGroup, Layout, Tracer
from edgecls.prune.handlers import handler_for

__all__ = ["ChannelGraph", "ChannelGroup", "analyze", "graph_nodes"]


def graph_nodes(model: Any) -> list[Any]:
    """The call nodes of a functional model, inputs first."""
    return keras_graph_nodes(
        model,
        not_a_graph=ModelError(
            "structured pruning needs a functional (or Sequential) Keras model built on a keras.Input; "
            "subclassed models have no graph to analyse"
        ),
    )


def analyze(model: Any, *, exclude: Sequence[str] = ()) -> ChannelGraph:
    """Find the channel groups of ``model`` and what keeps each from being pruned.

    ``exclude`` names layers whose output channels (for a member: whose
    channels) must stay as they are.
    """
    names = {layer.name for layer in model.layers}
    missing = [name for name in exclude if name not in names]
    if missing:
        raise ConfigError(
            f"--exclude names no layer of this model: {', '.join(missing)}; its layers include "
            f"{', '.join(sorted(names)[:8])}, …"
        )
    nodes = graph_nodes(model)
    calls = Counter(id(node.operation) for node in nodes)
    tracer = Tracer()
    layouts: dict[int, Layout] = {}
    unsupported: list[dict[str, str]] = []
    for node in nodes:
        operation = node.operation
        inputs = []
        for tensor in node.arguments.keras_tensors:
            if id(tensor) not in layouts:
                raise ModelError(
                    f"{operation.name}: an input tensor was not produced by the model's graph; is it a nested or "
                    "partial model?"
                )
            inputs.append(layouts[id(tensor)])
        handler = handler_for(operation)
        reason = _unsupported_reason(operation, node, handler, calls[id(operation)])
        if reason is not None:
            unsupported.append({"layer": operation.name, "class": type(operation).__name__, "reason": reason})
            for layout in inputs:
                tracer.block(layout, f"{operation.name}: {reason}")
            outputs = [
                tracer.fixed(_channels(tensor), f"{operation.name}: output of a layer the pruner leaves alone")
                for tensor in node.outputs
            ]
        else:
            outputs = handler.trace(operation, node, inputs, tracer)
        if operation.name == LOGITS_LAYER:
            for layout in outputs:
                tracer.block(layout, "classifier head (logits): its units are the classes")
        for tensor, layout in zip(node.outputs, outputs):
            layouts[id(tensor)] = layout
    for tensor in model.outputs:
        tracer.block(layouts[id(tensor)], "model output: the classifier's classes are never pruned")
    for name in exclude:
        _block_named(model, tracer, layouts, name, f"excluded by --exclude {name}")
    order = {layer.name: index for index, layer in enumerate(model.layers)}
    return tracer.finish(order, unsupported)


def _unsupported_reason(operation: Any, node: Any, handler: Any, calls: int) -> str | None:
    if handler is None:
        kind = (
            "a nested model (build it flat, e.g. keras.applications with input_tensor=)"
            if hasattr(operation, "layers")
            else "not a layer type the pruner understands"
        )
        return f"{type(operation).__name__} is {kind}"
    if calls > 1:
        return f"is called {calls} times (a shared layer)"
    if getattr(operation, "quantization_mode", None):
        return f"is quantized ({operation.quantization_mode}); prune the float model"
    return handler.unsupported(operation, node)


def _channels(tensor: Any) -> int:
    return int(tensor.shape[-1]) if len(tensor.shape) else 1


def _block_named(model: Any, tracer: Tracer, layouts: dict[int, Layout], name: str, reason: str) -> None:
    layer = model.get_layer(name)
    for node in graph_nodes(model):
        if node.operation is layer:
            for tensor in node.outputs:
                tracer.block(layouts[id(tensor)], reason)
