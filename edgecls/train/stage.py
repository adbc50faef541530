"""``edgecls train``: choose the starting weights, load the data, build the model, train it in one or two phases.

``train`` chooses the starting weights (``--weights``: ImageNet by default for a
photo folder on a network Keras has them for), trains a pretrained base in two
phases (``edgecls.train.finetune``: the head on the frozen base, then the top of the
base at a tenth of the learning rate) and a from-scratch base with a BatchNorm
momentum that suits the run's steps (``edgecls.models.bn_momentum_for``), and warns
when validation accuracy stays at chance while training accuracy climbs
(``edgecls.train.watch``). ``--init-from`` hands over to ``edgecls.train.retrain``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.base.errors import ConfigError
from edgecls.base.fileio import write_json
from edgecls.data import Dataset, load_dataset
from edgecls.train import distribute
from edgecls.train.config import FINETUNE_LR_FACTOR, TrainConfig
from edgecls.train.finetune import PHASE1_DONE, PHASE_DIRS, merge_histories, unfreeze_top, write_history_csv
from edgecls.train.fit import best_epoch, fit, rank_epoch, read_history, steps_per_epoch
from edgecls.train.precise_bn import precise_bn_for
from edgecls.train.result import TrainResult, finish
from edgecls.train.runs import resolve_resume, write_run_files
from edgecls.train.watch import chance_watch

log = logging.getLogger(__name__)


def train(config: TrainConfig, *, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train a registry model on ``config.data``; write ``runs/NAME/``.

    >>> result = train(TrainConfig(data="digits", epochs=15))  # doctest: +SKIP
    >>> result.val_accuracy  # doctest: +SKIP
    0.98
    """
    import keras

    if config.init_from is not None or config.replay is not None:
        from edgecls.train.retrain import retrain

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
    scratch_base = not pretrained and entry.keras_module is not None  # a keras.applications base from scratch
    # its epochs (a from-scratch budget: steps over this many images), learning rate and patience (config.py)
    config = config.resolved(keras_base_from_scratch=scratch_base, train_images=len(dataset.train))
    # From scratch, a keras.applications base gets the momentum that settles its BatchNorm statistics
    # within this run's steps (cnn keeps its own 0.9); a pretrained base keeps its settled statistics.
    steps = steps_per_epoch(dataset, config.batch_size * chosen.num_replicas_in_sync) * config.epochs
    bn_momentum = bn_momentum_for(steps) if scratch_base else None
    if bn_momentum is not None:
        log.info(
            "%s from scratch: %d epochs at lr %g, BatchNorm momentum %.4f for %d steps",
            config.model,
            config.epochs,
            config.learning_rate,
            bn_momentum,
            steps,
        )
    # a from-scratch keras.applications base: BatchNorm statistics re-estimated before each validation
    precise_bn = precise_bn_for(config.precise_bn, keras_base_from_scratch=scratch_base)
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
    result = finish(model, dataset, config, run_dir, history, channel_order, started, watch)
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


def resolve_train_config(config: TrainConfig) -> TrainConfig:
    """The options a run of ``config`` trains with, decided without loading data or downloading anything: input
    size and channels, the starting weights (``imagenet`` by default for a photo folder where Keras publishes them),
    epochs and learning rate. What a pipeline's stage key holds, so a changed default re-runs the stage.

    >>> resolve_train_config(TrainConfig(data="digits")).epochs  # doctest: +SKIP
    20
    """
    if config.init_from is not None:  # a retrained model: its options come from the model it starts from
        return config
    from edgecls.models import get_entry

    entry = get_entry(config.model)
    size = config.img_size or entry.default_image_size
    channel_order = (config.channels or ("GRAY" if config.data == "digits" else "RGB")).upper()
    weights = config.weights if config.weights is not None else _default_weights(config, size, channel_order)[0]
    scratch_base = str(weights).lower() == "none" and entry.keras_module is not None
    resolved = replace(config, img_size=size, channels=channel_order, weights=weights)
    from edgecls.data.folders import training_image_count

    train_images = training_image_count(config.data, config.val_split) if scratch_base else 0
    return resolved.resolved(keras_base_from_scratch=scratch_base, train_images=train_images)


def _default_weights(config: TrainConfig, size: int, channel_order: str) -> tuple[str, str]:
    """``imagenet`` for a photo folder where Keras publishes ImageNet weights at this alpha and size, else
    ``none``; with the reason in words."""
    from edgecls.models import get_entry, pretrained

    entry = get_entry(config.model)
    has_imagenet = entry.keras_module is not None and pretrained.imagenet_weights_available(
        config.model, alpha=config.alpha, image_size=(size, size)
    )
    if config.data != "digits" and channel_order == "RGB" and has_imagenet:
        return "imagenet", (
            f"the default for a photo folder on {config.model} at alpha {config.alpha:g}, {size}x{size}; "
            "--weights none trains from scratch"
        )
    why = (
        "edgecls' own cnn"
        if entry.keras_module is None
        else "the built-in digits"
        if config.data == "digits"
        else f"{channel_order} input"
        if channel_order != "RGB"
        else f"Keras has none at alpha {config.alpha:g}"
    )
    return "none", f"from scratch: {why}"


def choose_weights(config: TrainConfig, size: int, channel_order: str) -> str:
    """``imagenet``, ``none`` or a file, from ``config.weights`` (None: the default), logged; an ImageNet
    file is found in (or downloaded into) Keras' cache here, so offline with nothing cached fails before training."""
    from edgecls.models import pretrained

    chosen = config.weights
    if chosen is None:
        chosen, why = _default_weights(config, size, channel_order)
        log.info("weights: %s (%s)", chosen, why)
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
                rank_epoch({"val_accuracy": accuracy, "val_loss": loss})
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
