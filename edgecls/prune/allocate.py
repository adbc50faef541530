"""Per-group ratios that reach a MACs target at the least loss: the sensitivity scan's curves, spent greedily.

``MacsModel`` computes a plan's MACs from each group's kept channels without building the model: a convolution or
dense layer costs ``base · kept_in/in · kept_out/out``, a depthwise layer ``base · kept/channels`` (exactly what
``edgecls.models.stats`` counts on the rebuilt model). ``allocate`` starts from the unpruned model and, step after
step, takes the next cut (one group down to its next kept count, multiples of ``round_to``) with the smallest
loss increase per MAC saved, until the MACs are at or under the target: the greedy cut of NetAdapt (ECCV 2018),
priced by the scan's interpolated curves instead of a fine-tune per step.

>>> plan = allocate(table, MacsModel.of(model, graph), graph, target_macs=0.5 * base)  # doctest: +SKIP
>>> plan.kept["block_3_expand"], plan.macs / base  # doctest: +SKIP
(72, 0.497)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgecls.base.errors import ConfigError
from edgecls.prune.channels import ChannelGraph
from edgecls.prune.plan import kept_count
from edgecls.prune.sensitivity import SensitivityTable

CUT_LEVELS = 16  # kept counts tried per group: ratios 0, 1/16, …, 15/16, rounded to round_to


@dataclass(frozen=True)
class _Layer:
    base: int  # its MACs unpruned
    inputs: tuple[tuple[str | None, int], ...]  # (group or None, channels) of what it reads
    output_group: str | None  # a producer's own channels (None: a depthwise/member layer, or untouched)
    depthwise: bool


@dataclass
class MacsModel:
    """A plan's MACs per image, from the kept channels of each group."""

    layers: list[_Layer]
    channels: dict[str, int]  # group -> channels unpruned
    untouched: int  # MACs of layers no group touches

    @classmethod
    def of(cls, model: Any, graph: ChannelGraph) -> MacsModel:
        from edgecls.models.stats import layer_macs

        layers, untouched = [], 0
        for name, macs in layer_macs(model).items():
            record = graph.layers.get(name)
            if record is None or not record.input_layout:
                untouched += macs
                continue
            inputs = tuple((group, size) for group, _, size in graph.segments(record.input_layout))
            producer = record.role == "producer"
            layers.append(_Layer(macs, inputs, record.output_group if producer else None, not producer))
        return cls(layers, {group.name: group.channels for group in graph.groups}, untouched)

    def macs(self, kept: dict[str, int]) -> int:
        total = float(self.untouched)
        for layer in self.layers:
            width = sum(size for _, size in layer.inputs)
            fraction_in = sum(size * self._fraction(group, kept) for group, size in layer.inputs) / max(width, 1)
            fraction_out = 1.0 if layer.depthwise else self._fraction(layer.output_group, kept)
            total += layer.base * fraction_in * fraction_out
        return int(round(total))

    def _fraction(self, group: str | None, kept: dict[str, int]) -> float:
        if group is None or group not in kept:
            return 1.0
        return kept[group] / self.channels[group]


@dataclass
class Allocation:
    """Kept channels per group, the ratio that is, the plan's MACs and its predicted loss increase."""

    kept: dict[str, int]
    ratios: dict[str, float]
    macs: int
    macs_before: int
    predicted_loss_increase: float


def allocate(
    table: SensitivityTable,
    macs_model: MacsModel,
    graph: ChannelGraph,
    *,
    target_macs: float,
    min_channels: int = 8,
    round_to: int = 8,
) -> Allocation:
    """The greedy plan whose MACs are at or under ``target_macs`` (an absolute count)."""
    groups = {group.name: group.channels for group in graph.groups if group.prunable and group.name in table.loss}
    levels = {name: _levels(channels, min_channels, round_to) for name, channels in groups.items()}
    kept = {name: channels for name, channels in groups.items()}
    macs_before = macs_model.macs({})
    macs = macs_before
    predicted = 0.0
    while macs > target_macs:
        best = None
        for name in groups:
            lower = [count for count in levels[name] if count < kept[name]]
            if not lower:
                continue
            trial = {**kept, name: lower[0]}
            saved = macs - macs_model.macs(trial)
            if saved <= 0:
                continue
            loss = _increase(table, name, groups[name], lower[0]) - _increase(table, name, groups[name], kept[name])
            cost = max(loss, 0.0) / saved  # a cut that scored better than none costs nothing
            if best is None or cost < best[0]:
                best = (cost, name, lower[0], saved, loss)
        if best is None:
            raise ConfigError(
                f"--target-macs: the prunable groups bottom out at {macs / macs_before:.3f} of the model's MACs "
                f"(--min-channels {min_channels}, --round-to {round_to}, layers left alone); ask for more"
            )
        _, name, count, saved, loss = best
        kept[name] = count
        macs -= saved
        predicted += loss
    predicted -= _fill_back(table, macs_model, groups, levels, kept, target_macs)
    ratios = {name: round(1.0 - kept[name] / groups[name], 4) for name in groups}
    return Allocation(kept, ratios, macs_model.macs(kept), macs_before, round(predicted, 5))


def _fill_back(
    table: SensitivityTable,
    macs_model: MacsModel,
    groups: dict[str, int],
    levels: dict[str, list[int]],
    kept: dict[str, int],
    target_macs: float,
) -> float:
    """Give channels back while the MACs stay at or under the target (the greedy's last cut may overshoot by a large
    group's step): each time the restore that buys back the most loss per MAC; returns the loss bought back."""
    macs = macs_model.macs(kept)
    bought = 0.0
    while True:
        best = None
        for name in groups:
            higher = [count for count in levels[name] if count > kept[name]]
            if not higher:
                continue
            trial = {**kept, name: higher[-1]}
            added = macs_model.macs(trial) - macs
            if added <= 0 or macs + added > target_macs:
                continue
            gain = _increase(table, name, groups[name], kept[name]) - _increase(table, name, groups[name], higher[-1])
            value = gain / added
            if best is None or value > best[0]:
                best = (value, name, higher[-1], added, gain)
        if best is None:
            return bought
        _, name, count, added, gain = best
        kept[name] = count
        macs += added
        bought += gain


def floor_fraction(macs_model: MacsModel, graph: ChannelGraph, *, min_channels: int = 8, round_to: int = 8) -> float:
    """The fewest MACs any plan reaches (every prunable group at its floor), as a fraction of the model's."""
    floor = {
        group.name: _levels(group.channels, min_channels, round_to)[-1] for group in graph.groups if group.prunable
    }
    return macs_model.macs(floor) / macs_model.macs({})


def _levels(channels: int, min_channels: int, round_to: int) -> list[int]:
    """The distinct kept counts of a group, largest first."""
    counts = {kept_count(channels, step / CUT_LEVELS, min_channels=min_channels, round_to=round_to) for step in
              range(CUT_LEVELS)}  # fmt: skip
    return sorted((min(channels, count) for count in counts), reverse=True)


def _increase(table: SensitivityTable, group: str, channels: int, kept: int) -> float:
    return table.loss_increase(group, 1.0 - kept / channels)
