"""The fit loop every stage that trains shares (train, prune fine-tuning, distillation, retraining).

Adam with cosine-decay learning rate, early stopping on validation accuracy with
the best weights kept, ``BackupAndRestore`` for resuming after a crash, CSV
history that survives a resume, TensorBoard logs, and the run's
``tf.distribute`` strategy (``edgecls.train.distribute``: the GPUs of one
machine, or the workers ``TF_CONFIG`` names), with a global batch of
``batch_size`` x replicas.

>>> history = fit(model, dataset, FitOptions(epochs=3), run_dir="runs/a")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.base.fileio import atomic_path
from edgecls.data import Dataset, to_tf_dataset
from edgecls.train import distribute


@dataclass(frozen=True)
class FitOptions:
    """How ``fit`` trains, whichever stage calls it (train, prune fine-tuning, distillation)."""

    epochs: int
    batch_size: int = 64
    learning_rate: float = 1e-3  # the start of the cosine decay
    seed: int = 0
    augment: tuple[str, ...] = ()  # flip, rotate, zoom
    patience: int | None = None  # early stopping on val accuracy after this many epochs; None or 0: off
    resume: bool = False  # continue from run_dir/backup
    adversarial: float = 0.0  # FGSM epsilon in pixel levels (edgecls.train.adversarial); 0: off
    precise_bn: int = 0  # BatchNorm statistics re-estimated from this many training images before each validation


def make_optimizer(learning_rate: float, total_steps: int):
    """Adam with a cosine-decay learning rate over ``total_steps`` (to 1 % of the start)."""
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, total_steps), alpha=0.01)
    return keras.optimizers.Adam(learning_rate=schedule)


def fit(
    model,
    dataset: Dataset,
    options: FitOptions,
    *,
    run_dir: str | Path | None = None,
    class_weights: dict[int, float] | None = None,
    callbacks: Sequence[Any] = (),
    compile: bool = True,
) -> dict[str, list[float]]:
    """Train ``model`` on ``dataset.train``, validating on ``dataset.val``; returns the history.

    The best epoch's weights (by validation accuracy) are in ``model`` on return.
    With ``run_dir``: a ``backup/`` for ``options.resume`` after an interruption,
    ``history.csv`` and TensorBoard logs in ``tb/``. With ``compile=False`` the
    caller has compiled ``model`` already (a ``keras.distillation.Distiller``).

    >>> history = fit(model, dataset, FitOptions(epochs=3), run_dir="runs/a")  # doctest: +SKIP
    """
    import keras
    import tensorflow as tf

    epochs, seed, resume = options.epochs, options.seed, options.resume
    # under a strategy (the caller's scope) the pipeline yields global batches, which it splits among replicas
    batch_size = options.batch_size * tf.distribute.get_strategy().num_replicas_in_sync
    keras.utils.set_random_seed(seed)
    train_data = to_tf_dataset(
        dataset.train, batch_size=batch_size, training=True, seed=seed, augment=tuple(options.augment)
    )
    val_data = to_tf_dataset(dataset.val, batch_size=batch_size, training=False)
    if compile:
        model.compile(
            optimizer=make_optimizer(options.learning_rate, steps_per_epoch(dataset, batch_size) * epochs),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    trained = model
    if options.adversarial:
        from edgecls.train.adversarial import AdversarialTrainer

        trained = AdversarialTrainer(model, epsilon=options.adversarial)  # shares model's variables
        trained.compile(
            optimizer=model.optimizer,
            loss=model.loss,
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    run_dir = Path(run_dir) if run_dir is not None else None
    best = _best_weights_callback(run_dir / "best.weights.h5" if run_dir is not None else None)
    all_callbacks: list[Any] = [best]
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        history_csv = run_dir / "history.csv"
        if resume and history_csv.exists():
            done = _read_history(history_csv)
            best.best = max((rank_epoch(row) for row in done), default=best.best)
            # Each new iterator over the shuffled dataset draws the next shuffle order, and
            # Keras 3.15 opens two per epoch: draw the orders of the epochs already done, so
            # the resumed epochs see the batches an uninterrupted run would have seen
            # (tests/test_spine.py checks the weights come out identical).
            for _ in range(2 * len(done)):
                iter(train_data)
        all_callbacks += [
            keras.callbacks.BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=True),
            _random_state_callback(run_dir / "backup_random_state.npz", restore=resume),
            keras.callbacks.CSVLogger(str(history_csv), append=resume),
            keras.callbacks.TensorBoard(str(run_dir / "tb"), write_graph=False, profile_batch=0),
        ]
    if options.precise_bn:
        from edgecls.train.precise_bn import precise_bn_callback

        all_callbacks.append(
            precise_bn_callback(
                model, dataset.train, count=options.precise_bn, batch_size=options.batch_size, seed=seed
            )
        )
    if options.patience:
        from edgecls.train.stopping import early_stopping
        from edgecls.train.watch import chance_threshold

        # an epoch at chance while training accuracy still rises does not count (edgecls.train.stopping)
        threshold = chance_threshold(dataset.val.labels)[1]
        all_callbacks.append(early_stopping(patience=options.patience, threshold=threshold))
    all_callbacks += list(callbacks)
    history = trained.fit(
        train_data,
        validation_data=val_data,
        epochs=epochs,
        callbacks=all_callbacks,
        class_weight=class_weights,
        shuffle=False,
        verbose=0,
    )
    if best.weights is not None:
        model.set_weights(best.weights)
    elif run_dir is not None and (run_dir / "best.weights.h5").exists():
        model.load_weights(str(run_dir / "best.weights.h5"))
    distribute.average_across_workers(model)  # BatchNorm statistics differ by shard; identical models after
    if run_dir is not None:
        # after a resume, the CSV holds every epoch of the run, the Keras history only this session's
        return read_history(run_dir)
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def steps_per_epoch(dataset: Dataset, batch_size: int) -> int:
    return int(np.ceil(len(dataset.train) / batch_size))


def _best_weights_callback(path: Path | None):
    """Keep the weights of the best epoch (``rank_epoch``), in memory and (with
    ``path``) on disk, so a resumed run still ends on its best epoch."""
    import keras

    class BestWeights(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.best, self.weights = (-1.0, -float("inf")), None

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            rank = rank_epoch(logs)
            if logs.get("val_accuracy") is not None and rank > self.best:
                self.best, self.weights = rank, self.model.get_weights()
                if path is not None:
                    with atomic_path(path) as tmp:
                        self.model.save_weights(str(tmp))

    return BestWeights()


def rank_epoch(epoch: dict) -> tuple[float, float]:
    """How epochs compare: validation accuracy, then, among equal accuracies, the lower validation loss.

    On a small validation set several epochs often tie (all at 100 %); the first
    of them is usually the least trained, so the loss decides between them.
    """
    loss = epoch.get("val_loss")
    return float(epoch.get("val_accuracy", -1.0)), -float(loss) if loss is not None and np.isfinite(loss) else -float(
        "inf"
    )


def best_epoch(history: dict[str, list[float]]) -> int:
    """The 1-based epoch that ``fit`` keeps, from a history of per-epoch lists."""
    accuracies = history.get("val_accuracy") or []
    losses = history.get("val_loss") or [None] * len(accuracies)
    ranks = [rank_epoch({"val_accuracy": accuracy, "val_loss": loss}) for accuracy, loss in zip(accuracies, losses)]
    return ranks.index(max(ranks)) + 1 if ranks else 1


def _random_state_callback(path: Path, *, restore: bool):
    """Save the random generators' state (Dropout's ``SeedGenerator``) at each epoch's end
    and restore it on resume: ``BackupAndRestore`` keeps weights and optimizer, not these,
    and without them a resumed run draws other dropout masks than an uninterrupted one."""
    import keras

    class RandomState(keras.callbacks.Callback):
        def _states(self):
            return [v for v in self.model.variables if "seed_generator_state" in v.path]

        def on_train_begin(self, logs=None):
            if restore and path.exists():
                saved = np.load(path)
                for index, variable in enumerate(self._states()):
                    variable.assign(saved[f"state{index}"])

        def on_epoch_end(self, epoch, logs=None):
            with atomic_path(path) as tmp:
                np.savez(tmp, **{f"state{index}": variable.numpy() for index, variable in enumerate(self._states())})

        def on_train_end(self, logs=None):
            path.unlink(missing_ok=True)

    return RandomState()


def read_history(run_dir: Path) -> dict[str, list[float]]:
    """A run's per-epoch history, column by column, from the CSV ``fit`` keeps across resumes."""
    rows = _read_history(run_dir / "history.csv") if (run_dir / "history.csv").exists() else []
    return {key: [row[key] for row in rows if key in row] for key in (rows[0] if rows else {})}


def _read_history(path: Path) -> list[dict[str, float]]:
    with path.open() as handle:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(handle)
        ]
