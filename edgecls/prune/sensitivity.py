"""How much each channel group can lose: prune one group at a time, re-estimate BatchNorm, score.

Depthwise networks are not uniformly prunable: a MobileNet's early expansion groups and its last projection cost
accuracy at a ratio its middle blocks take for free (NetAdapt, ECCV 2018; AMC, ECCV 2018). The scan measures it:
for every prunable group and each ratio of ``SCAN_RATIOS``, the group's least important channels (by the pruning
criterion) are cut, the model's BatchNorm statistics are re-estimated from training images (EagleEye's "adaptive
BN", ECCV 2020: removed channels shift the statistics of every BatchNorm after them, and a candidate scored with the
old statistics is ranked by that shift rather than by what it lost), and the held-out images are scored.

One working copy of the model serves every candidate: a cut is the consumers' weights for the removed channels set
to zero (``rebuild.masked_layer_weights``, the arithmetic of ``mask_removed_channels``, which the rebuilt model
equals), so no model is rebuilt or retraced per candidate; each candidate's weights and statistics are put back
before the next.

>>> table = sensitivity_scan(model, graph, train_images, val_images, criterion="l1")  # doctest: +SKIP
>>> table.loss_increase("block_3_expand", 0.5)  # doctest: +SKIP
0.041
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecls.prune.channels import ChannelGraph
from edgecls.prune.importance import channel_importance
from edgecls.prune.plan import kept_count
from edgecls.prune.rebuild import clone_with_config, masked_layer_weights

log = logging.getLogger(__name__)

SCAN_RATIOS = (0.25, 0.5, 0.75)  # each group's sensitivity curve is measured here (0: nothing lost)
SCAN_BN_IMAGES = 256  # training images the BatchNorm statistics are re-estimated from, per candidate
SCAN_VAL_IMAGES = 512  # held-out images each candidate is scored on (all when there are fewer)


@dataclass
class SensitivityTable:
    """Per group: the held-out loss and top-1 with the group cut at each ratio, against the unpruned model."""

    base_loss: float
    base_top1: float
    ratios: tuple[float, ...]
    loss: dict[str, list[float]] = field(default_factory=dict)  # group -> loss at each ratio
    top1: dict[str, list[float]] = field(default_factory=dict)
    adaptive_bn: bool = True
    images: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def loss_increase(self, group: str, ratio: float) -> float:
        """The loss increase of cutting ``ratio`` of ``group``, interpolated between scanned ratios (0 at 0, the
        last segment's slope beyond the last)."""
        xs = [0.0, *self.ratios]
        ys = [0.0, *(value - self.base_loss for value in self.loss[group])]
        if ratio <= xs[-1]:
            return float(np.interp(ratio, xs, ys))
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return float(ys[-1] + slope * (ratio - xs[-1]))

    def ranking(self, ratio: float = 0.5) -> list[str]:
        """Groups from the least to the most sensitive at ``ratio``."""
        return sorted(self.loss, key=lambda group: self.loss_increase(group, ratio))

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_loss": round(self.base_loss, 5),
            "base_top1": round(self.base_top1, 5),
            "ratios": list(self.ratios),
            "adaptive_bn": self.adaptive_bn,
            "images": self.images,
            "seconds": round(self.seconds, 1),
            "groups": {
                group: {
                    "loss": [round(v, 5) for v in self.loss[group]],
                    "top1": [round(v, 4) for v in self.top1[group]],
                }
                for group in self.loss
            },
        }


def group_keep(model: Any, graph: ChannelGraph, group_name: str, kept: int, criterion: str) -> np.ndarray:
    """The indices of the ``kept`` most important channels of one group (sorted)."""
    scores, _ = channel_importance(model, graph, graph.group(group_name), criterion)
    return np.sort(np.argsort(-scores, kind="stable")[:kept])


def sensitivity_scan(
    model: Any,
    graph: ChannelGraph,
    train_pixels: np.ndarray,
    val_pixels: np.ndarray,
    val_labels: np.ndarray,
    *,
    criterion: str,
    min_channels: int = 8,
    round_to: int = 8,
    ratios: Sequence[float] = SCAN_RATIOS,
    adaptive_bn: bool = True,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> SensitivityTable:
    """Cut each prunable group of ``graph`` alone at each of ``ratios`` in a working copy of ``model`` (itself is
    not changed), re-estimate BatchNorm from ``train_pixels`` (``adaptive_bn``), score ``val_pixels``."""
    from edgecls.train.precise_bn import BatchNormEstimator, batchnorm_layers

    started = time.time()
    work = clone_with_config(model, model.get_config())
    work.set_weights(model.get_weights())
    estimator = BatchNormEstimator(work, train_pixels, batch_size=batch_size) if adaptive_bn else None
    statistics = [(layer, layer.get_weights()) for layer in batchnorm_layers(work)]
    score = _scorer(work, val_pixels, val_labels, batch_size)
    if estimator is not None:
        estimator.update()  # the unpruned model scored with statistics estimated the same way as every candidate
    base_loss, base_top1 = score()
    table = SensitivityTable(
        base_loss, base_top1, tuple(ratios), adaptive_bn=adaptive_bn,
        images={"batchnorm": len(train_pixels), "scored": len(val_pixels)},
    )  # fmt: skip
    groups = [group for group in graph.groups if group.prunable]
    candidates = [(group, ratio) for group in groups for ratio in ratios]
    for index, (group, ratio) in enumerate(candidates):
        kept = min(group.channels, kept_count(group.channels, ratio, min_channels=min_channels, round_to=round_to))
        if kept >= group.channels:  # at its floor: cutting it loses nothing, saves nothing
            loss, top1 = base_loss, base_top1
        else:
            keep = {group.name: group_keep(model, graph, group.name, kept, criterion)}
            changed = masked_layer_weights(model, graph, keep)
            for name, weights in changed.items():
                work.get_layer(name).set_weights(weights)
            if estimator is not None:
                estimator.update()
            loss, top1 = score()
            for name in changed:  # put the candidate back: the unpruned weights and statistics
                work.get_layer(name).set_weights(model.get_layer(name).get_weights())
            for layer, weights in statistics:
                layer.set_weights(weights)
        table.loss.setdefault(group.name, []).append(loss)
        table.top1.setdefault(group.name, []).append(top1)
        if progress is not None:
            progress(index + 1, len(candidates))
    table.seconds = time.time() - started
    log.info(
        "sensitivity scan: %d groups x %d ratios in %.0f s (BatchNorm re-estimated: %s)",
        len(groups), len(ratios), table.seconds, adaptive_bn,
    )  # fmt: skip
    return table


def _scorer(model: Any, pixels: np.ndarray, labels: np.ndarray, batch_size: int) -> Callable[[], tuple[float, float]]:
    """Mean cross-entropy and top-1 of ``model`` on the images (one traced function, reused by every candidate)."""
    import tensorflow as tf

    predict = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    batches = [tf.constant(pixels[i : i + batch_size], dtype=tf.float32) for i in range(0, len(pixels), batch_size)]

    def score() -> tuple[float, float]:
        probabilities = np.concatenate([np.asarray(predict(batch)) for batch in batches]).astype(np.float64)
        picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0)
        return float(-np.mean(np.log(picked))), float(np.mean(probabilities.argmax(axis=1) == labels))

    return score
