"""Which channels each group keeps: counts from the ratio, indices from importance.

Kept counts are rounded *up* to a multiple of ``round_to`` (8 by default):
XNNPACK's and TensorRT's SIMD kernels work on 4/8/16 channels at once, so 48
channels run as fast as 41 would, and rounding up never removes more than
asked. A group never shrinks below ``min_channels``.

>>> kept_count(96, 0.5, min_channels=8, round_to=8)
48
>>> kept_count(20, 0.0, min_channels=8, round_to=8)
20
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecls.prune.channels import ChannelGraph
from edgecls.prune.importance import channel_importance


@dataclass(frozen=True)
class GroupPlan:
    """What happens to one channel group (one line of the report)."""

    name: str
    channels_before: int
    channels_after: int
    layers: tuple[str, ...]  # producers and members
    criterion: str | None = None  # None when left alone
    left_alone: str | None = None  # why it was not pruned


def kept_count(channels: int, ratio: float, *, min_channels: int, round_to: int) -> int:
    """Channels kept out of ``channels`` when removing ``ratio`` of them."""
    if ratio <= 0.0:
        return channels
    step = max(1, round_to)
    kept = math.ceil(channels * (1.0 - ratio) / step - 1e-9) * step  # 1e-9: 96 · (1 - 88/96) is 8.000000000000002
    return int(min(channels, max(kept, min_channels, 1)))


def plan_channels(
    model: Any,
    graph: ChannelGraph,
    *,
    ratio: float,
    criterion: str,
    min_channels: int = 8,
    round_to: int = 8,
    original_channels: dict[str, int] | None = None,
    final_kept: dict[str, int] | None = None,
    progress: float = 1.0,
) -> tuple[dict[str, np.ndarray], list[GroupPlan]]:
    """Kept indices per pruned group, and a plan line for every group.

    ``original_channels`` (group → channels before the first of several
    steps) makes ``ratio`` count from the original width, so three steps of
    ``ratio`` ⅓, ⅔, 1 × 0.5 end where one step of 0.5 would. ``final_kept``
    (group → channels at the end, from a budget's allocation) replaces the
    uniform ``ratio``: a step ``progress`` of the way there keeps the original
    count minus that share of the cut, rounded up to ``round_to``.
    """
    keep: dict[str, np.ndarray] = {}
    plans: list[GroupPlan] = []
    for group in graph.groups:
        layers = group.producers + group.members
        if group.blocked:
            plans.append(
                GroupPlan(group.name, group.channels, group.channels, layers, left_alone="; ".join(group.blocked[:3]))
            )
            continue
        original = (original_channels or {}).get(group.name, group.channels)
        if final_kept is not None:  # integers: a budget's counts must come out exactly as allocated
            final = final_kept.get(group.name, original)
            partway = original - round((original - final) * progress)
            step = max(1, round_to)
            target = min(group.channels, max(-(-partway // step) * step, final))
        else:
            target = min(group.channels, kept_count(original, ratio, min_channels=min_channels, round_to=round_to))
        if target >= group.channels:
            reason = (
                None if ratio <= 0 else f"{group.channels} channels is already at the --min-channels/--round-to floor"
            )
            plans.append(GroupPlan(group.name, group.channels, group.channels, layers, left_alone=reason))
            continue
        scores, used = channel_importance(model, graph, group, criterion)
        kept = np.sort(np.argsort(-scores, kind="stable")[:target])
        keep[group.name] = kept
        plans.append(GroupPlan(group.name, group.channels, int(target), layers, criterion=used))
    return keep, plans
