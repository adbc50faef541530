"""Early stopping that does not stop a run that has not started.

Keras' ``EarlyStopping`` counts an epoch without a better validation accuracy against ``patience``
from the first epoch. A network trained from scratch can validate at chance for its first epochs
while it learns (measured, issue 26: MobileNetV3-Small on textures4 at 25 % for 9 epochs while its
training accuracy rose from 59 to 98 %, and patience 8 ended the run there). Here an epoch does not
count while validation has never left chance (``edgecls.train.watch.chance_threshold``) and training
accuracy is still rising (above its best so far): the log says so. Once validation has been above
chance, or training accuracy stops rising, epochs count as in Keras.

>>> stopper = early_stopping(patience=8, threshold=0.33)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["early_stopping"]


def early_stopping(*, patience: int, threshold: float, monitor: str = "val_accuracy") -> Any:
    """A ``keras.callbacks.EarlyStopping`` on ``monitor`` (mode max) that holds its count while validation
    accuracy has never been above ``threshold`` (chance) and training accuracy rises."""
    import keras

    class ChanceAwareEarlyStopping(keras.callbacks.EarlyStopping):
        def __init__(self) -> None:
            super().__init__(monitor=monitor, patience=patience, mode="max")
            self.threshold = threshold
            self.held: list[int] = []  # 1-based epochs not counted

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self.started, self.best_train, self.held = False, float("-inf"), []

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            val, train = logs.get(monitor), logs.get("accuracy")
            if val is not None and train is not None and not self.started:
                if val > self.threshold:
                    self.started = True
                elif train > self.best_train:
                    self.best_train = float(train)
                    self.held.append(epoch + 1)
                    log.info(
                        "epoch %d: validation accuracy %.1f%% is at chance while training accuracy rises (%.1f%%): "
                        "early stopping does not count this epoch (patience %d)",
                        epoch + 1,
                        100 * val,
                        100 * train,
                        patience,
                    )
                    return
            if train is not None:
                self.best_train = max(self.best_train, float(train))
            super().on_epoch_end(epoch, logs)

    return ChanceAwareEarlyStopping()
