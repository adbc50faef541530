"""How much each channel of a group matters: ``l1``, ``l2`` or ``bn-gamma``.

A group's channels live in several layers (the convolutions that produce
them, their BatchNormalization, a depthwise convolution that follows). Each
layer scores every channel; scores are divided by the layer's mean score, so a
layer with large weights does not drown the others, then averaged over the
layers (Torch-Pruning's group importance with mean reduction).

- ``l1``/``l2``: the L1/L2 norm of each channel's weights in the producers and
  depthwise members (the filter norm of Li et al., 2017).
- ``bn-gamma``: ``|gamma|`` of the group's BatchNormalization layers (network
  slimming, Liu et al., 2017). A group without BatchNormalization falls back
  to ``l1``, and the report says so.

>>> scores, used = channel_importance(model, graph, graph.groups[0], "l1")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecls.base.errors import ConfigError
from edgecls.prune.channels import ChannelGraph, ChannelGroup
from edgecls.prune.handlers import handler_for

CRITERIA = ("l1", "l2", "bn-gamma")


def check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown pruning criterion {criterion!r}; choose one of: {', '.join(CRITERIA)}")
    return criterion


def channel_importance(model: Any, graph: ChannelGraph, group: ChannelGroup, criterion: str) -> tuple[np.ndarray, str]:
    """Scores (one per channel of ``group``, higher = keep) and the criterion actually used."""
    check_criterion(criterion)
    role = "gamma" if criterion == "bn-gamma" else "kernel"
    contributions = [_norms(part, criterion) for part in _channel_rows(model, graph, group, role)]
    if not contributions and criterion == "bn-gamma":
        scores, _ = channel_importance(model, graph, group, "l1")
        return scores, "l1"
    if not contributions:  # cannot happen for a group with producers; keep the order stable anyway
        return np.ones(group.channels), criterion
    normalised = [scores / (scores.mean() + 1e-12) for scores in contributions]
    return np.mean(normalised, axis=0), criterion


def _norms(rows: np.ndarray, criterion: str) -> np.ndarray:
    if criterion == "l2":
        return np.sqrt(np.square(rows).sum(axis=1))
    return np.abs(rows).sum(axis=1)  # l1; for bn-gamma rows are (channels, 1): |gamma|


def _channel_rows(model: Any, graph: ChannelGraph, group: ChannelGroup, role: str):
    """(channels, k) weight matrices of every layer of ``group``, one row per group channel."""
    for name in group.producers + group.members:
        layer = model.get_layer(name)
        matrix = handler_for(layer).channel_weights(layer).get(role)
        if matrix is None:
            continue
        record = graph.layers[name]
        if record.role == "producer":
            yield matrix
            continue
        for group_name, offset, size in graph.segments(record.input_layout or ()):
            if group_name == group.name:
                yield matrix[offset : offset + size]
