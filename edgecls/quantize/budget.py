"""The accuracy budget: quantize, measure the drop, keep the worst layers in float, repeat.

Format-neutral. A format module (``tflite``, ``onnx``) supplies a
``Requantizer``: it converts with a set of nodes kept in float, describes its
graph as ``GraphOp``s, and measures each quantized tensor's error as
``LayerError``s. This module ranks, chooses what to keep in float, and runs
the loop against the evaluation images.

Why the unit kept in float is "a tensor": the error of an INT8 model is made
where an activation tensor is rounded to 256 levels. Keeping only the op that
*produces* a bad tensor in float does not help, because its consumers still
quantize the tensor on their input with the same range; so the producing
layer *and* the ops that consume the tensor stay float, and the tensor never
becomes INT8.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphOp:
    """One op of a converted graph, with the Keras layers its name points to."""

    node: str  # what the converter's exclusion list takes: a TFLite output tensor name, an ONNX node name
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    layers: tuple[str, ...]  # Keras layer names found in the op's name (a fused op names several)


@dataclass
class LayerError:
    """How much quantizing one activation tensor loses.

    ``error`` (ranks): each channel's relative L1 error when the float
    activation alone is rounded to this tensor's INT8 grid, averaged over
    channels — 0 is lossless, 1 means the channels' signal is gone. A few
    huge outliers stretch the grid and flatten every other channel: a
    whole-tensor SQNR hides that (the outliers dominate it), this does not.
    ``accumulated``: relative L1 error of the INT8 model's tensor against the
    float model's, i.e. the error built up to this point.
    """

    tensor: str
    layers: list[str]
    op_type: str
    error: float
    accumulated: float | None = None
    scale: float | None = None

    @property
    def layer(self) -> str:
        return self.layers[0] if self.layers else self.tensor


class Requantizer(Protocol):
    """What the budget loop needs from a format."""

    def quantize(self, float_nodes: frozenset[str]):  # returns a path to a candidate artifact
        ...

    def graph(self) -> list[GraphOp]: ...

    def layer_errors(self) -> list[LayerError]: ...


@dataclass
class Attempt:
    float_layers: list[str]
    float_nodes: list[str]
    top1: float | None
    agreement: float | None
    drop: float | None  # points (percent) of top-1 lost against float
    seconds: float


@dataclass
class BudgetOutcome:
    """The candidate chosen and how the loop got there."""

    path: object
    float_layers: list[str]
    float_nodes: list[str]
    top1: float | None
    agreement: float | None
    drop: float | None
    within_budget: bool | None
    worst_layers: list[LayerError]
    attempts: list[Attempt] = field(default_factory=list)


def channel_error(
    values: np.ndarray, scale: float, zero_point: int, *, qmin: int = -128, qmax: int = 127, channel_axis: int = -1
) -> float:
    """Mean over channels of ``sum|fakequant(x) - x| / sum|x|`` (see ``LayerError``).

    Channels that are all zero (dead ReLUs) carry no signal and are left out.
    """
    if not scale or values.size == 0:
        return 0.0
    values = np.moveaxis(np.asarray(values, dtype=np.float64), channel_axis, -1)
    values = values.reshape(-1, values.shape[-1])
    rounded = (np.clip(np.round(values / scale) + zero_point, qmin, qmax) - zero_point) * scale
    error = np.abs(rounded - values).sum(axis=0)
    magnitude = np.abs(values).sum(axis=0)
    live = magnitude > 0
    if not live.any():
        return 0.0
    return float(np.mean(np.minimum(error[live] / magnitude[live], 1.0)))


def relative_error(reference: np.ndarray, approximation: np.ndarray) -> float:
    """``sum|approximation - reference| / sum|reference|`` (0 when the reference is all zero)."""
    reference = np.asarray(reference, dtype=np.float64)
    magnitude = np.abs(reference).sum()
    if magnitude == 0:
        return 0.0
    return float(
        np.abs(np.asarray(approximation, dtype=np.float64).reshape(reference.shape) - reference).sum() / magnitude
    )


def layers_in_name(name: str, layer_names: Iterable[str]) -> tuple[str, ...]:
    """Keras layer names that a converted op/tensor name refers to, in order of appearance.

    Converters name ops by their TensorFlow scope, e.g.
    ``functional_1/conv1_1/convolution;functional_1/bn1_1/FusedBatchNormV3``:
    path segments are layer names, possibly with a ``_<n>`` suffix that the
    tracing added.
    """
    known = set(layer_names)
    found: list[str] = []
    for segment in re.split(r"[/;:]", name):
        match = segment if segment in known else None
        if match is None:
            base = re.sub(r"_\d+$", "", segment)
            match = base if base in known else None
        if match is not None and match not in found:
            found.append(match)
    return tuple(found)


def float_nodes_for(tensor: str, graph: Sequence[GraphOp]) -> set[str]:
    """The nodes to keep in float so that ``tensor`` is never quantized.

    Its producer, the other ops of the producer's Keras layer(s), and every op
    that consumes it.
    """
    producers = [op for op in graph if tensor in op.outputs]
    layers = {layer for op in producers for layer in op.layers}
    nodes = {op.node for op in producers}
    nodes |= {op.node for op in graph if op.layers and set(op.layers) <= layers}
    nodes |= {op.node for op in graph if tensor in op.inputs}
    return nodes


def layers_of(kept: Sequence[LayerError], nodes: Iterable[str], graph: Sequence[GraphOp]) -> list[str]:
    """Keras layers running in float: the culprits' own layers first, then the rest in graph order."""
    names: list[str] = []
    for item in kept:
        names += [layer for layer in item.layers or (item.tensor,) if layer not in names]
    chosen = set(nodes)
    for op in graph:
        if op.node in chosen:
            names += [layer for layer in op.layers or (op.node,) if layer not in names]
    return names


def run_budget(
    requantizer: Requantizer,
    evaluate: Callable[[object], tuple[float, float]] | None,
    *,
    float_top1: float | None,
    max_drop: float,
    max_float_layers: int,
    worst: int = 5,
) -> BudgetOutcome:
    """Quantize; while the top-1 drop exceeds ``max_drop`` points, keep the next
    worst tensor in float and re-quantize, up to ``max_float_layers`` tensors.

    ``evaluate(path) -> (top1, agreement with float)``; without it (no
    evaluation data) the plain INT8 candidate is returned unjudged. When the
    limit is reached first, the most accurate candidate is kept and
    ``within_budget`` is False.
    """
    started = time.time()
    candidate = requantizer.quantize(frozenset())
    errors = sorted(requantizer.layer_errors(), key=lambda item: item.error, reverse=True)
    if evaluate is None or float_top1 is None:
        attempt = Attempt([], [], None, None, None, round(time.time() - started, 2))
        return BudgetOutcome(candidate, [], [], None, None, None, None, errors[:worst], [attempt])
    top1, agreement = evaluate(candidate)
    attempts = [Attempt([], [], top1, agreement, _drop(float_top1, top1), round(time.time() - started, 2))]
    best = (candidate, attempts[0])
    graph = requantizer.graph()
    nodes: set[str] = set()
    kept: list[LayerError] = []
    for layer_error in errors:
        if attempts[-1].drop <= max_drop or len(kept) >= max_float_layers:
            break
        added = float_nodes_for(layer_error.tensor, graph) - nodes
        if not added:
            continue
        kept.append(layer_error)
        nodes |= added
        started = time.time()
        candidate = requantizer.quantize(frozenset(nodes))
        top1, agreement = evaluate(candidate)
        attempt = Attempt(
            layers_of(kept, nodes, graph),
            sorted(nodes),
            top1,
            agreement,
            _drop(float_top1, top1),
            round(time.time() - started, 2),
        )
        attempts.append(attempt)
        log.info("kept %s in float: top-1 %.4f (drop %.2f points)", ", ".join(attempt.float_layers), top1, attempt.drop)
        if top1 > best[1].top1:
            best = (candidate, attempt)
    chosen_path, chosen = (candidate, attempts[-1]) if attempts[-1].drop <= max_drop else best
    within = chosen.drop <= max_drop
    if not within:
        log.warning(
            "INT8 top-1 drop exceeds --max-drop %.2f with up to %d tensor(s) kept in float (limit %d); "
            "keeping the most accurate candidate: %d layer(s) in float, drop %.2f points",
            max_drop,
            len(kept),
            max_float_layers,
            len(chosen.float_layers),
            chosen.drop,
        )
    return BudgetOutcome(
        chosen_path,
        chosen.float_layers,
        chosen.float_nodes,
        chosen.top1,
        chosen.agreement,
        chosen.drop,
        within,
        errors[:worst],
        attempts,
    )


def _drop(float_top1: float, top1: float) -> float:
    return round((float_top1 - top1) * 100.0, 4)
