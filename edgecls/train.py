"""Training: the shared ``fit`` machinery and the ``train`` stage built on it.

``fit`` is what every stage that trains uses (train, prune fine-tuning,
distillation): Adam with cosine-decay learning rate, early stopping on
validation accuracy with the best weights kept, ``BackupAndRestore`` for
resuming after a crash, CSV history that survives a resume, TensorBoard logs,
and the run's ``tf.distribute`` strategy (``edgecls.distribute``: the GPUs of
one machine, or the workers ``TF_CONFIG`` names), with a global batch of
``batch_size`` x replicas.

``train`` chooses the starting weights (``--weights``: ImageNet by default for a
photo folder on a network Keras has them for), trains a pretrained base in two
phases (``edgecls.finetune``: the head on the frozen base, then the top of the
base at a tenth of the learning rate) and a from-scratch base with a BatchNorm
momentum that suits the run's steps (``models.bn_momentum_for``), and warns
when validation accuracy stays at chance while training accuracy climbs.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgecls import distribute
from edgecls.data import Dataset, load_dataset, parse_augment, to_tf_dataset
from edgecls.datacache import CACHE_MODES
from edgecls.errors import ConfigError
from edgecls.fileio import atomic_path, write_json
from edgecls.finetune import (
    PHASE1_DONE,
    PHASE_DIRS,
    chance_threshold,
    chance_watch,
    kept_warnings,
    merge_histories,
    unfreeze_top,
    write_history_csv,
)
from edgecls.precise_bn import precise_bn_callback, precise_bn_for
from edgecls.runs import describe_device, environment, resolve_resume, version, write_run_files
from edgecls.runtime.metadata import ModelInfo

__all__ = [
    "FitOptions",
    "TrainConfig",
    "TrainResult",
    "best_epoch",
    "describe_device",
    "environment",
    "fit",
    "make_optimizer",
    "read_history",
    "train",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``edgecls train``; defaults are the CLI's defaults."""

    data: str = "digits"
    model: str = "cnn"
    img_size: int | None = None  # None: the model's default (cnn 32, MobileNets 96, ResNet50 224)
    epochs: int = 20
    batch_size: int = 64
    val_split: float = 0.2
    seed: int = 0
    out: str | None = None  # None: runs/<model>-<data name>
    resume: bool = False
    alpha: float = 1.0
    weights: str | None = (
        None  # imagenet | none | a file; None: imagenet for a photo folder where Keras has them, else none
    )
    freeze_base: bool = False  # phase 1 only (no fine-tuning unless finetune_epochs says so)
    learning_rate: float = 1e-3
    finetune_epochs: int | None = None  # phase 2; None: DEFAULT_FINETUNE_EPOCHS with a pretrained base, else 0
    finetune_lr: float | None = None  # None: learning_rate / 10
    unfreeze: int | None = None  # phase 2 trains the top N base layers; None (and no unfreeze_from): the whole base
    unfreeze_from: str | None = None  # phase 2 trains this base layer and every one after it
    patience: int = 8
    class_weights: str = "none"  # none | auto
    augment: str = "auto"  # auto | none | comma list of flip,rotate,zoom
    mixed_precision: bool = False
    channels: str | None = None  # None: GRAY for digits, RGB for folders
    cache: str = "auto"  # memory | disk | none | auto: where a folder's decoded pixels live (edgecls.datacache)
    adversarial: float = 0.0  # FGSM examples at this many pixel levels mixed into each batch; 0: off
    init_from: str | None = None  # fine-tune this model.keras (edgecls.retrain) instead of building one
    replay: str | None = None  # with init_from: the original training data, sampled into training
    replay_fraction: float = 0.5  # with replay: the share of the training set that is replayed old images
    precise_bn: int | None = None  # images for BatchNorm statistics before each validation; None: see precise_bn_for

    def __post_init__(self) -> None:
        if self.cache not in CACHE_MODES:
            raise ConfigError(f"--cache must be one of {', '.join(CACHE_MODES)}, got {self.cache!r}")
        for name, value, ok, wanted in (
            ("--epochs", self.epochs, self.epochs >= 1, "1 or more"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, "1 or more"),
            ("--img-size", self.img_size, self.img_size is None or self.img_size >= 1, "1 or more"),
            ("--alpha", self.alpha, self.alpha > 0, "above 0 (MobileNets: 0.35 to 1.4)"),
            ("--lr", self.learning_rate, self.learning_rate > 0, "above 0"),
            ("--patience", self.patience, self.patience >= 0, "0 (off) or more"),
            (
                "--finetune-epochs",
                self.finetune_epochs,
                self.finetune_epochs is None or self.finetune_epochs >= 0,
                "0 (off) or more",
            ),
            ("--finetune-lr", self.finetune_lr, self.finetune_lr is None or self.finetune_lr > 0, "above 0"),
            ("--unfreeze", self.unfreeze, self.unfreeze is None or self.unfreeze >= 1, "1 or more layers"),
            ("--adversarial", self.adversarial, self.adversarial == 0 or 1 <= self.adversarial <= 255, "1..255 levels"),
            ("--replay-fraction", self.replay_fraction, 0 <= self.replay_fraction < 1, "from 0 up to (not) 1"),
            ("--precise-bn", self.precise_bn, self.precise_bn is None or self.precise_bn >= 0, "0 (off) or more"),
        ):
            if not ok:
                raise ConfigError(f"{name} must be {wanted}, got {value}")
        if self.unfreeze is not None and self.unfreeze_from is not None:
            raise ConfigError(f"--unfreeze {self.unfreeze} and --unfreeze-from {self.unfreeze_from}: choose one")

    def phase2_epochs(self, pretrained: bool) -> int:
        """Epochs of fine-tuning: none without a pretrained base (an error when asked for), none with
        --freeze-base unless asked for, else ``finetune_epochs`` or the default."""
        if not pretrained:
            if self.finetune_epochs:
                raise ConfigError(
                    f"--finetune-epochs {self.finetune_epochs} fine-tunes a pretrained base, and this run "
                    "trains from scratch (--weights none): raise --epochs instead, or pass --weights imagenet|FILE"
                )
            return 0
        if self.finetune_epochs is not None:
            return self.finetune_epochs
        return 0 if self.freeze_base else DEFAULT_FINETUNE_EPOCHS

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        data_name = Path(self.data).name if self.data != "digits" else "digits"
        return Path("runs") / f"{self.model}-{data_name}"

    def fit_options(self) -> FitOptions:
        return FitOptions(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            seed=self.seed,
            augment=parse_augment(self.augment, self.data),
            patience=self.patience,
            resume=self.resume,
            adversarial=self.adversarial,
        )


DEFAULT_FINETUNE_EPOCHS = 10
FINETUNE_LR_FACTOR = 0.1  # phase 2 starts at a tenth of --lr (the Keras guide uses 1e-5 after 1e-3 with plain Adam)


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
    adversarial: float = 0.0  # FGSM epsilon in pixel levels (edgecls.adversarial_training); 0: off
    precise_bn: int = 0  # BatchNorm statistics re-estimated from this many training images before each validation


@dataclass
class TrainResult:
    model_path: Path
    run_dir: Path
    val_accuracy: float
    val_loss: float
    epochs_run: int
    best_epoch: int
    n_train: int
    n_val: int
    class_names: list[str]
    skipped_files: list[str]
    seconds: float
    device: str
    weights: str = "none"  # what the base started from: imagenet, none, or the file
    phase_epochs: list[int] = field(default_factory=list)  # epochs run in phase 1 (and phase 2)
    warnings: list[str] = field(default_factory=list)  # e.g. validation accuracy at chance
    validation: dict[str, Any] = field(default_factory=dict)  # --init-from: top-1 on the old and the new val split

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model_path"], data["run_dir"] = str(self.model_path), str(self.run_dir)
        return data


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
        from edgecls.adversarial_training import AdversarialTrainer

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
            best.best = max((_rank(row) for row in done), default=best.best)
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
        all_callbacks.append(
            precise_bn_callback(model, dataset.train, count=options.precise_bn, batch_size=batch_size, seed=seed)
        )
    if options.patience:
        from edgecls.stopping import early_stopping

        # an epoch at chance while training accuracy still rises does not count (edgecls.stopping)
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
    """Keep the weights of the best epoch (``_rank``), in memory and (with
    ``path``) on disk, so a resumed run still ends on its best epoch."""
    import keras

    class BestWeights(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.best, self.weights = (-1.0, -float("inf")), None

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            rank = _rank(logs)
            if logs.get("val_accuracy") is not None and rank > self.best:
                self.best, self.weights = rank, self.model.get_weights()
                if path is not None:
                    with atomic_path(path) as tmp:
                        self.model.save_weights(str(tmp))

    return BestWeights()


def _rank(epoch: dict) -> tuple[float, float]:
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
    ranks = [_rank({"val_accuracy": accuracy, "val_loss": loss}) for accuracy, loss in zip(accuracies, losses)]
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


def train(config: TrainConfig, *, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train a registry model on ``config.data``; write ``runs/NAME/``.

    >>> result = train(TrainConfig(data="digits", epochs=15))  # doctest: +SKIP
    >>> result.val_accuracy  # doctest: +SKIP
    0.98
    """
    import keras

    if config.init_from is not None or config.replay is not None:
        from edgecls.retrain import retrain

        return retrain(config, callbacks=callbacks)
    started = time.time()
    chosen = distribute.strategy()  # first: MultiWorkerMirroredStrategy must exist before any TensorFlow op
    cluster = distribute.cluster_from_env()
    run_dir = distribute.worker_run_dir(config.run_dir(), cluster)
    config = resolve_resume(config, run_dir, backups=resume_markers(run_dir), what="run")
    from edgecls.models import bn_momentum_for, build_model, get_entry

    entry = get_entry(config.model)
    size = config.img_size or entry.default_image_size
    channel_order = (config.channels or ("GRAY" if config.data == "digits" else "RGB")).upper()
    if channel_order not in ("GRAY", "RGB"):
        raise ConfigError(f"--channels must be gray or rgb, got {config.channels!r}")
    config = replace(config, weights=choose_weights(config, size, channel_order))  # offline, nothing cached: fails here
    pretrained = config.weights != "none"
    finetune_epochs = config.phase2_epochs(pretrained)
    dataset = load_dataset(
        config.data,
        image_size=(size, size),
        channel_order=channel_order,
        val_split=config.val_split,
        seed=config.seed,
        cache=config.cache,
        cache_dir=run_dir / "cache",
    )
    log.info(
        "data: %s, %d train / %d val images, %d classes, %d skipped, pixels in %s",
        dataset.name,
        len(dataset.train),
        len(dataset.val),
        dataset.num_classes,
        len(dataset.skipped),
        dataset.cache,
    )
    if config.mixed_precision:
        _enable_mixed_precision()
    # From scratch, a keras.applications base gets the momentum that settles its BatchNorm statistics
    # within this run's steps (cnn keeps its own 0.9); a pretrained base keeps its settled statistics.
    steps = steps_per_epoch(dataset, config.batch_size * chosen.num_replicas_in_sync) * config.epochs
    bn_momentum = None if pretrained or entry.keras_module is None else bn_momentum_for(steps)
    if bn_momentum is not None:
        log.info("%s from scratch: BatchNorm momentum %.4f for %d steps", config.model, bn_momentum, steps)
    precise_bn = precise_bn_for(config.precise_bn, pretrained=pretrained)  # edgecls.precise_bn
    keras.utils.set_random_seed(config.seed)
    watch = chance_watch(dataset.val.labels)
    class_weights = _class_weights(config.class_weights, dataset)
    with chosen.scope():
        model = build_model(
            config.model,
            num_classes=dataset.num_classes,
            image_size=(size, size),
            channels=1 if channel_order == "GRAY" else 3,
            alpha=config.alpha,
            weights=None if not pretrained else config.weights,
            freeze_base=config.freeze_base or pretrained,
            bn_momentum=bn_momentum,
        )
        write_run_files(
            run_dir,
            config,
            dataset,
            image_size=[size, size],
            channel_order=channel_order,
            bn_momentum=bn_momentum,
            precise_bn=precise_bn,
            cache=dataset.cache,
            distribution=distribute.describe(chosen, cluster, config.batch_size),
            phases={
                "phase1_epochs": config.epochs,
                "phase2_epochs": finetune_epochs,
                "finetune_lr": config.finetune_lr or config.learning_rate * FINETUNE_LR_FACTOR,
            },
        )
        if finetune_epochs == 0:
            history = fit(
                model,
                dataset,
                options=replace(config.fit_options(), precise_bn=precise_bn),
                run_dir=run_dir,
                callbacks=[*callbacks, watch],
                class_weights=class_weights,
            )
            history["phase"] = [1.0] * len(history.get("val_accuracy", []))
        else:
            history = _two_phases(model, dataset, config, run_dir, finetune_epochs, [*callbacks, watch], class_weights)
    result = _finish(model, dataset, config, run_dir, history, channel_order, started, watch)
    (run_dir / PHASE_DIRS[0] / PHASE1_DONE).unlink(missing_ok=True)  # the run is complete: nothing left to resume
    distribute.finish_worker(run_dir, cluster)
    return result


def resume_markers(run_dir: Path) -> list[Path]:
    """What an interrupted run leaves: a ``BackupAndRestore`` folder, or a finished phase 1 of two."""
    return [
        run_dir / "backup",
        *(run_dir / phase / "backup" for phase in PHASE_DIRS),
        run_dir / PHASE_DIRS[0] / PHASE1_DONE,
    ]


def choose_weights(config: TrainConfig, size: int, channel_order: str) -> str:
    """``imagenet``, ``none`` or a file, from ``config.weights`` (None: the default), logged; an ImageNet
    file is found in (or downloaded into) Keras' cache here, so offline with nothing cached fails before training."""
    from edgecls import pretrained
    from edgecls.models import get_entry

    entry = get_entry(config.model)
    chosen = config.weights
    if chosen is None:
        has_imagenet = entry.keras_module is not None and pretrained.imagenet_weights_available(
            config.model, alpha=config.alpha, image_size=(size, size)
        )
        if config.data != "digits" and channel_order == "RGB" and has_imagenet:
            chosen = "imagenet"
            log.info(
                "weights: imagenet (the default for a photo folder on %s at alpha %g, %dx%d; --weights none trains "
                "from scratch)",
                config.model,
                config.alpha,
                size,
                size,
            )
        else:
            chosen = "none"
            why = (
                "edgecls' own cnn"
                if entry.keras_module is None
                else "the built-in digits"
                if config.data == "digits"
                else f"{channel_order} input"
                if channel_order != "RGB"
                else f"Keras has none at alpha {config.alpha:g}"
            )
            log.info("weights: none (from scratch: %s)", why)
    source = pretrained.resolve_weights(chosen)
    if source is None:
        return "none"
    if source == pretrained.IMAGENET:
        pretrained.imagenet_weights_file(
            config.model, alpha=config.alpha, image_size=(size, size), channels=1 if channel_order == "GRAY" else 3
        )
        return pretrained.IMAGENET
    log.info("weights: %s", source)
    return str(source)


def _two_phases(
    model,
    dataset: Dataset,
    config: TrainConfig,
    run_dir: Path,
    finetune_epochs: int,
    callbacks: Sequence[Any],
    class_weights: dict[int, float] | None,
) -> dict[str, list[float]]:
    """Phase 1 (head on the frozen base) then phase 2 (the top of the base, BatchNorm frozen, lower rate);
    each resumable in its own folder. The model keeps the better phase's best weights."""
    phase1_dir, phase2_dir = (run_dir / phase for phase in PHASE_DIRS)
    done = phase1_dir / PHASE1_DONE
    if config.resume and done.exists():
        log.info("phase 1 finished before the interruption: its best weights, then phase 2")
        model.load_weights(str(phase1_dir / "best.weights.h5"))
        first = read_history(phase1_dir)
    else:
        log.info(
            "phase 1: the head on the frozen %s base, %d epochs at lr %g",
            config.model,
            config.epochs,
            config.learning_rate,
        )
        options = replace(config.fit_options(), resume=config.resume and (phase1_dir / "backup").exists())
        first = fit(
            model, dataset, options=options, run_dir=phase1_dir, callbacks=callbacks, class_weights=class_weights
        )
        write_json(done, {"best_epoch": best_epoch(first)})
    phase1_weights = model.get_weights()  # its best epoch's; creation order, whatever is trainable
    unfrozen = unfreeze_top(model, count=config.unfreeze, from_layer=config.unfreeze_from)
    learning_rate = config.finetune_lr or config.learning_rate * FINETUNE_LR_FACTOR
    log.info(
        "phase 2: fine-tuning %d layers of the base (from %s; BatchNorm frozen), %d epochs at lr %g",
        len(unfrozen),
        unfrozen[0] if unfrozen else "-",
        finetune_epochs,
        learning_rate,
    )
    options = replace(
        config.fit_options(),
        epochs=finetune_epochs,
        learning_rate=learning_rate,
        resume=config.resume and (phase2_dir / "history.csv").exists(),
    )
    second = fit(model, dataset, options=options, run_dir=phase2_dir, callbacks=callbacks, class_weights=class_weights)
    ranks = [
        max(
            (
                _rank({"val_accuracy": accuracy, "val_loss": loss})
                for accuracy, loss in zip(phase["val_accuracy"], phase["val_loss"])
            ),
            default=None,
        )
        for phase in (first, second)
    ]
    if ranks[0] is not None and (ranks[1] is None or ranks[0] >= ranks[1]):
        log.info(
            "fine-tuning did not beat phase 1 (val accuracy %.4f vs %.4f): keeping phase 1's best weights",
            ranks[0][0],
            ranks[1][0] if ranks[1] else float("nan"),
        )
        model.set_weights(phase1_weights)
    history = merge_histories(first, second)
    write_history_csv(run_dir / "history.csv", history)
    return history


def _finish(
    model,
    dataset: Dataset,
    config: TrainConfig,
    run_dir: Path,
    history: dict[str, list[float]],
    channel_order: str,
    started: float,
    watch: Any,
) -> TrainResult:
    val_loss, val_accuracy = (
        float(v)
        for v in model.evaluate(to_tf_dataset(dataset.val, batch_size=config.batch_size, training=False), verbose=0)
    )
    accuracies = history.get("val_accuracy", [val_accuracy])
    info = ModelInfo(
        labels=dataset.class_names,
        input_size=tuple(model.input_shape[1:3]),
        channels=int(model.input_shape[3]),
        channel_order=channel_order,
        provenance={
            "source_model": config.model,
            "dataset": dataset.name,
            "split": dataset.split,
            "val_accuracy": round(val_accuracy, 6),
            "n_train": len(dataset.train),
            "n_val": len(dataset.val),
            "run": str(run_dir),
            "precision": "fp32",
            "weights": str(config.weights),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "edgecls": version(),
        },
    )
    from edgecls.keras_io import save_keras_model

    model_path = save_keras_model(model, run_dir / "model.keras", info)
    result = TrainResult(
        model_path=model_path,
        run_dir=run_dir,
        val_accuracy=val_accuracy,
        val_loss=val_loss,
        epochs_run=len(accuracies),
        best_epoch=best_epoch(history),
        n_train=len(dataset.train),
        n_val=len(dataset.val),
        class_names=list(dataset.class_names),
        skipped_files=dataset.skipped,
        seconds=round(time.time() - started, 2),
        device=describe_device(),
        weights=str(config.weights),
        phase_epochs=[
            history.get("phase", []).count(phase) for phase in (1.0, 2.0) if phase in history.get("phase", [])
        ],
        warnings=kept_warnings(watch, val_accuracy),
    )
    write_json(run_dir / "history.json", history)
    write_json(run_dir / "metrics.json", result.to_dict())
    from edgecls.plots import plot_curves

    plot_curves(history, run_dir / "curves.png")
    return result


def _class_weights(mode: str, dataset: Dataset) -> dict[int, float] | None:
    if mode == "none":
        return None
    if mode != "auto":
        raise ConfigError(f"--class-weights must be auto or none, got {mode!r}")
    counts = np.bincount(dataset.train.labels, minlength=dataset.num_classes).astype(np.float64)
    weights = len(dataset.train) / (dataset.num_classes * np.maximum(counts, 1.0))
    return {i: float(w) for i, w in enumerate(weights)}


def _enable_mixed_precision() -> None:
    import keras
    import tensorflow as tf

    if not tf.config.list_logical_devices("GPU"):
        log.warning("--mixed-precision: no GPU visible; float16 on a CPU is slower, training in float32 instead")
        return
    keras.mixed_precision.set_global_policy("mixed_float16")
