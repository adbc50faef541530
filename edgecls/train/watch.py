"""The chance-level watch: a run whose validation stays at chance while training accuracy climbs is told so.

>>> watch = chance_watch(dataset.val.labels)  # doctest: +SKIP
>>> fit(model, dataset, options, callbacks=[watch]); watch.message  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def chance_threshold(val_labels: np.ndarray) -> tuple[float, float]:
    """(chance, threshold): the largest class's share of validation, and the accuracy at or below which
    a model has learned nothing that carries over: chance plus two binomial standard deviations of
    the validation set (at least 5 points, at most half the way from chance to 100 %)."""
    counts = np.bincount(np.asarray(val_labels, dtype=np.int64))
    n = int(counts.sum())
    chance = float(counts.max() / n) if n else 0.0
    margin = 2.0 * math.sqrt(chance * (1.0 - chance) / n) if n else 0.0
    return chance, chance + min(max(0.05, margin), 0.5 * (1.0 - chance))


def chance_watch(val_labels: np.ndarray, *, epochs_in_a_row: int = 3):
    """A Keras callback that warns once (``logging.warning``) when validation accuracy stays at chance for
    ``epochs_in_a_row`` epochs (or the last two of a run) while training accuracy is at least half the way
    from chance to 100 %. The warning is kept in its ``message`` (None while all is well) and ``threshold``.

    Not the first epoch or two alone: on a small data set BatchNorm's moving statistics lag
    the weights for a few epochs even in a healthy run (measured: cnn, 38 images, 2 epochs at
    chance, then 100 %)."""
    import keras

    chance, threshold = chance_threshold(val_labels)

    class ChanceWatch(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.chance, self.threshold, self.message, self.streak = chance, threshold, None, 0

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            val, train = logs.get("val_accuracy"), logs.get("accuracy")
            if val is None or train is None:
                return
            at_chance = val <= self.threshold and train >= self.chance + 0.5 * (1.0 - self.chance)
            self.streak = self.streak + 1 if at_chance else 0
            self.last = (val, train)
            if self.streak >= epochs_in_a_row:
                self.warn()

        def on_train_end(self, logs=None):
            if self.streak >= 2:
                self.warn()

        def warn(self):
            if self.message is None:
                val, train = self.last
                self.message = (
                    f"validation accuracy {val:.1%} is at chance (the largest class is {self.chance:.1%} of "
                    f"validation) while training accuracy is {train:.1%}: the model learns nothing that carries over "
                    "to new images. "
                    "Likely causes: BatchNorm statistics that have not settled (a keras.applications base trained from "
                    "scratch for few steps: more epochs, or --weights imagenet), labels that do not match the images "
                    "(shuffled or mixed-up class folders), or too few images per class"
                )
                log.warning("%s", self.message)

    return ChanceWatch()


def kept_warnings(watch: Any, val_accuracy: float) -> list[str]:
    """The result's warnings: the chance warning when the model kept is still at chance."""
    if watch.message is None:
        return []
    if val_accuracy <= watch.threshold:
        return [watch.message]
    # at warning level, as the warning it takes back: a reader who saw that one sees this one too
    log.warning(
        "validation accuracy recovered to %.1f%% after the chance-level warning above: the model kept is not at chance",
        100 * val_accuracy,
    )
    return []
