"""What a data set is in memory: ``ImageSet`` (uint8 pixels, labels, sources) and ``Dataset`` (its two splits)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgecls.data.cache import StreamedImages

BUILTIN_DATASETS = ("digits",)


@dataclass
class ImageSet:
    """Images at the model's input size, in the model's channel order."""

    images: np.ndarray | StreamedImages  # (N, H, W, C) uint8; streamed from disk (or the files) past memory
    labels: np.ndarray  # (N,) int64
    sources: list[str]  # file paths, or "digits#<index>"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        indices = np.asarray(indices, dtype=np.int64)
        images = self.images.subset(indices) if self.streamed else self.images[indices]
        return ImageSet(images, self.labels[indices], [self.sources[i] for i in indices])

    @property
    def streamed(self) -> bool:
        """Pixels read from a disk cache (or decoded from the files) batch by batch, not held in memory."""
        return isinstance(self.images, StreamedImages)


@dataclass
class Dataset:
    """A data set split into training and validation parts."""

    name: str
    class_names: tuple[str, ...]
    train: ImageSet
    val: ImageSet
    channel_order: str
    skipped: list[str] = field(default_factory=list)
    split: dict = field(default_factory=dict)  # how val was chosen; recorded in runs and artifacts
    cache: str = "memory"  # where the pixels are: memory, disk or none (edgecls.data.cache)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def default_channel_order(data: str) -> str:
    """``GRAY`` for the built-in digits, ``RGB`` for photo folders."""
    return "GRAY" if data == "digits" else "RGB"
