"""The channel model of structured pruning: layouts, channel groups, and the tracer that finds them.

Every tensor's last axis is described by a *layout*: a sequence of segments,
each a run of channels from one *channel space*. The handlers
(``handlers.py``) tell the ``Tracer`` what each layer call does to channels;
the tracer unites the spaces that must move together into *channel groups*
and returns a ``ChannelGraph``. This module imports no other part of the
pruner: ``graph`` → ``handlers`` → ``channels``.

>>> tracer = Tracer()
>>> layout = tracer.produce(type("Layer", (), {"name": "conv"})(), 16)
>>> [(g.name, g.channels) for g in tracer.finish({"conv": 0}, []).groups]
[('conv', 16)]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Segment = tuple[int, int]  # (channel space id, number of channels)
Layout = tuple[Segment, ...]


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are kept or removed together."""

    name: str  # its first producer, in graph order
    channels: int
    producers: tuple[str, ...]  # layers whose output channels these are (Conv2D filters, Dense units)
    members: tuple[str, ...]  # per-channel layers with weights (BatchNormalization, DepthwiseConv2D)
    consumers: tuple[str, ...]  # layers that read these channels as inputs
    blocked: tuple[str, ...] = ()  # why it cannot be pruned; empty when it can

    @property
    def prunable(self) -> bool:
        return not self.blocked


@dataclass(frozen=True)
class LayerChannels:
    """What one layer does to channels, as the rebuild needs it."""

    name: str
    role: str  # "producer" (new channels), "member" (per-channel weights), or "other"
    input_layout: Layout | None  # the layout it reads (producers, members)
    output_group: str | None  # the group of its output channels (producers)


@dataclass
class ChannelGraph:
    """The result of ``analyze``: groups, and each layer's place in them."""

    groups: list[ChannelGroup]
    layers: dict[str, LayerChannels]
    unsupported: list[dict[str, str]]  # layers without a handler: name, class, reason
    space_group: dict[int, str] = field(repr=False, default_factory=dict)  # space id → group name

    def group(self, name: str) -> ChannelGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def indices(self, layout: Layout, keep: dict[str, np.ndarray]) -> np.ndarray | None:
        """Kept channel indices of a tensor with ``layout`` (``None``: all of them)."""
        if not any(self.space_group.get(space) in keep for space, _ in layout):
            return None
        parts, offset = [], 0
        for space, size in layout:
            kept = keep.get(self.space_group.get(space, ""), np.arange(size))
            parts.append(offset + np.asarray(kept, dtype=np.int64))
            offset += size
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def segments(self, layout: Layout) -> Iterable[tuple[str | None, int, int]]:
        """``(group name or None, offset, size)`` for each segment of ``layout``."""
        offset = 0
        for space, size in layout:
            yield self.space_group.get(space), offset, size
            offset += size


class Tracer:
    """Union-find over channel spaces, filled in by the handlers' ``trace``."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []
        self._blocked: dict[int, list[str]] = defaultdict(list)
        self._producers: dict[int, list[str]] = defaultdict(list)
        self._members: dict[int, list[str]] = defaultdict(list)
        self._consumers: dict[int, list[str]] = defaultdict(list)
        self.records: dict[str, tuple[str, Layout | None, int | None]] = {}

    # -- spaces ---------------------------------------------------------------

    def _new(self, channels: int) -> int:
        self._parent.append(len(self._parent))
        self._size.append(int(channels))
        return len(self._parent) - 1

    def find(self, space: int) -> int:
        while self._parent[space] != space:
            self._parent[space] = self._parent[self._parent[space]]
            space = self._parent[space]
        return space

    def _union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if self._size[a] != self._size[b]:  # cannot happen in a valid model; never guess
            self._blocked[a].append(f"channel counts {self._size[a]} and {self._size[b]} meet in one merge")
        self._parent[b] = a
        for table in (self._blocked, self._producers, self._members, self._consumers):
            if b in table:
                table[a].extend(table.pop(b))

    # -- what handlers call ---------------------------------------------------------

    def produce(self, layer: Any, channels: int) -> Layout:
        """A layer making ``channels`` new output channels (its filters/units)."""
        space = self._new(channels)
        self._producers[space].append(layer.name)
        role, layout, _ = self.records.get(layer.name, ("producer", None, None))
        self.records[layer.name] = ("producer", layout, space)
        return ((space, int(channels)),)

    def consume(self, layer: Any, layout: Layout) -> None:
        """A layer reading the channels of ``layout`` as inputs (its kernel's input axis)."""
        for space, _ in layout:
            self._consumers[self.find(space)].append(layer.name)
        role, _, space = self.records.get(layer.name, ("producer", None, None))
        self.records[layer.name] = (role, layout, space)

    def member(self, layer: Any, layout: Layout) -> None:
        """A layer with one weight (or more) per channel of ``layout``."""
        for space, _ in layout:
            self._members[self.find(space)].append(layer.name)
        self.records[layer.name] = ("member", layout, None)

    def shaped(self, layer: Any, layout: Layout) -> None:
        """A layer without weights whose config names its channel count (a ``Reshape``'s ``target_shape``)."""
        self.records[layer.name] = ("other", layout, None)

    def fixed(self, channels: int, reason: str) -> Layout:
        """New channels that can never be cut (the model input, an unknown layer's output)."""
        space = self._new(channels)
        self._blocked[space].append(reason)
        return ((space, int(channels)),)

    def block(self, layout: Layout, reason: str) -> None:
        for space, _ in layout:
            self._blocked[self.find(space)].append(reason)

    def merge(self, layouts: Sequence[Layout], layer: Any) -> Layout:
        """Element-wise combination: the inputs' channels become one set."""
        totals = [sum(size for _, size in layout) for layout in layouts]
        widest = max(totals)
        summands = []
        for layout, total in zip(layouts, totals):
            if total == 1 and widest > 1:
                self.block(layout, f"{layer.name}: broadcast across channels")
            else:
                summands.append(layout)
        first = summands[0]
        structure = [size for _, size in first]
        if any([size for _, size in layout] != structure for layout in summands[1:]):
            for layout in summands:
                self.block(
                    layout,
                    f"{layer.name}: {type(layer).__name__} of tensors whose channels come from different "
                    "concatenations",
                )
            return first
        for layout in summands[1:]:
            for (a, _), (b, _) in zip(first, layout):
                self._union(a, b)
        return first

    # -- the result -------------------------------------------------------------

    def finish(self, order: dict[str, int], unsupported: list[dict[str, str]]) -> ChannelGraph:
        roots = sorted(
            {self.find(space) for space in range(len(self._parent)) if self._producers.get(self.find(space))},
            key=lambda root: min(order.get(name, 1 << 30) for name in self._producers[root]),
        )
        groups, space_group = [], {}
        for root in roots:
            producers = sorted(set(self._producers[root]), key=lambda name: order.get(name, 1 << 30))
            name = producers[0]
            groups.append(
                ChannelGroup(
                    name=name,
                    channels=self._size[root],
                    producers=tuple(producers),
                    members=tuple(sorted(set(self._members.get(root, ())), key=lambda n: order.get(n, 1 << 30))),
                    consumers=tuple(sorted(set(self._consumers.get(root, ())), key=lambda n: order.get(n, 1 << 30))),
                    blocked=tuple(dict.fromkeys(self._blocked.get(root, ()))),
                )
            )
            space_group[root] = name
        for space in range(len(self._parent)):
            root = self.find(space)
            if root in space_group:
                space_group[space] = space_group[root]
        layers = {}
        for layer_name, (role, layout, space) in self.records.items():
            layers[layer_name] = LayerChannels(
                layer_name, role, layout, space_group.get(space) if space is not None else None
            )
        return ChannelGraph(groups, layers, unsupported, space_group)
