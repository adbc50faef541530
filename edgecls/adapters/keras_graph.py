"""The one adapter over Keras' model graph: every private Keras name edgecls reads is here.

Keras 3 documents ``model.layers``, ``model.operations``, ``layer.output`` and
``model.get_config()``, but not the *call nodes* of a functional graph (which
tensors each layer call reads and writes, a shared layer once per call), nor
whether a model has been called. Pruning's dependency analysis, the MAC count
and the ONNX export need both. Each private name below says why no public one
serves, so a Keras upgrade that moves one breaks one file.

>>> [node.operation.name for node in graph_nodes(model)][:2]  # doctest: +SKIP
['input_layer', 'conv1']
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from edgecls.base.errors import ModelError


def has_graph(model: Any) -> bool:
    """Whether ``model`` is a functional model with call nodes of its own (a Sequential's are inside it).

    Private: ``_nodes_by_depth`` is what every ``keras.Model(inputs, outputs)``
    (``Functional``) holds; ``isinstance(model, keras.Functional)`` is not public
    either, and a nested model inside a graph is recognised the same way.
    """
    return hasattr(model, "_nodes_by_depth")


def functional_graph(model: Any, *, not_a_graph: Exception | None = None) -> Any:
    """The functional model whose nodes run ``model``: itself, or a Sequential's inner graph.

    Private: a built ``Sequential`` runs its layers through ``_functional``;
    no public attribute exposes its nodes. A subclassed model raises
    ``not_a_graph`` (the caller's own words), else a ``ModelError``.
    """
    if has_graph(model):
        return model
    inner = getattr(model, "_functional", None)
    if inner is None:
        raise not_a_graph or ModelError(
            f"{model.name}: a subclassed Keras model has no graph to analyse; "
            "build it functional (or Sequential) on a keras.Input"
        )
    return inner


def graph_nodes(model: Any, *, not_a_graph: Exception | None = None) -> list[Any]:
    """The call nodes of ``model``'s graph in execution order, inputs first.

    Each node has ``operation`` (the layer), ``arguments.keras_tensors`` (its
    inputs) and ``outputs``. A nested model is one node (``is_nested_model``).

    Private: ``_nodes_by_depth`` ({depth: nodes}, the outputs at depth 0).
    ``model.operations`` is public but lists each layer once, not each call,
    and carries no tensors.
    """
    graph = functional_graph(model, not_a_graph=not_a_graph)
    by_depth = graph._nodes_by_depth  # noqa: SLF001 - see the docstring
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def producer(tensor: Any) -> tuple[Any, list[Any]] | None:
    """(the operation that computed a symbolic ``tensor``, the tensors that call read), or None for an input.

    Private: ``_keras_history`` (operation, node index, tensor index) and the
    operation's ``_inbound_nodes``; a ``KerasTensor`` has no public link to its
    producer while a graph is being built (``keras.models.clone_model``'s
    ``call_function`` sees tensors only).
    """
    history = getattr(tensor, "_keras_history", None)  # noqa: SLF001 - see the docstring
    if history is None:
        return None
    operation, node_index = history[0], history[1]
    node = operation._inbound_nodes[node_index]  # noqa: SLF001 - see the docstring
    return operation, list(node.arguments.keras_tensors)


def is_nested_model(operation: Any) -> bool:
    """Whether a node's operation is itself a functional model (its own nodes count too)."""
    return has_graph(operation)


def ensure_called(model: Any) -> None:
    """Call ``model`` once on zeros unless it has been called (Keras' ONNX exporter traces only a called model).

    Private: ``_called`` is set by ``Layer.__call__``; ``model.built`` is public
    but true for a freshly loaded model that has never been called.
    """
    if not model.built or not getattr(model, "_called", True):
        model(np.zeros((1, *model.input_shape[1:]), dtype=np.float32), training=False)


def ops_classes(names: tuple[str, ...]) -> list[type]:
    """The ``keras.ops`` operation classes of ``names`` (``Add``, ``Multiply``…) found in a graph.

    ``x + 3.0`` on a symbolic tensor records an operation of ``keras.src.ops.numpy``
    (MobileNetV3's hard sigmoid does); the public ``keras.ops`` exposes the
    functions, not these classes, so the private module is the only place to find them.
    """
    try:
        numpy_ops = importlib.import_module("keras.src.ops.numpy")
    except ImportError:  # pragma: no cover - a Keras without that layout
        return []
    return [getattr(numpy_ops, name) for name in names if hasattr(numpy_ops, name)]


def is_ops_class(cls: type) -> bool:
    """Whether ``cls`` is a ``keras.ops`` operation (from ``ops_classes``) rather than a layer."""
    return cls.__module__.startswith("keras.src.ops")
