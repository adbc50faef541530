"""``edgecls train --init-from model.keras --data new/ --replay old/``: fine-tune a deployed model on new frames.

The loop after deployment: frames the device collected (``edgecls.runtime.collect``)
are labelled into ``new/<class>/``, and the deployed model is trained further
on them plus a replay sample of its original training data, so it learns the
new domain without forgetting the old one (rehearsal, Robins 1995). Both data
sets are read at the model's input size and channel order; the new set's labels
must be the model's or a subset of them. The old data is split as the model's
provenance records (seed and share), so "old validation" is the split the
deployed model was validated on; the new set is split by ``--val-split``.
Training picks its best epoch on both validation splits together, and the result
reports top-1 on each (``TrainResult.validation``, ``metrics.json``).

``--replay-fraction F`` is the share of the training set that is replayed:
``n_replay = round(n_new * F / (1 - F))`` old training images (0.5: as many old
as new), at most all of them, drawn stratified by class with the seed.

>>> result = train(TrainConfig(init_from="runs/a/model.keras", data="new", replay="old"))  # doctest: +SKIP
>>> result.validation["old"]["top1"], result.validation["new"]["top1"]  # doctest: +SKIP
(0.97, 0.91)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.base.errors import ConfigError, DataError
from edgecls.base.fileio import write_json
from edgecls.data import Dataset, ImageSet, load_dataset, load_images, stratified_val_indices, to_tf_dataset
from edgecls.train.fit import fit
from edgecls.train.result import finish
from edgecls.train.watch import chance_watch

log = logging.getLogger(__name__)


def replay_count(n_new: int, n_old: int, fraction: float) -> int:
    """Old training images to replay beside ``n_new`` new ones so that they are ``fraction`` of the mix."""
    if fraction <= 0:
        return 0
    return min(n_old, int(round(n_new * fraction / (1.0 - fraction))))


def sample_replay(images: ImageSet, count: int, seed: int) -> ImageSet:
    """``count`` of ``images``, stratified by label (each class in its share, the remainder at random)."""
    if count >= len(images):
        return images
    rng = np.random.default_rng(seed)
    share = count / len(images)
    chosen: list[int] = []
    rest: list[int] = []
    for label in np.unique(images.labels):
        members = rng.permutation(np.flatnonzero(images.labels == label))
        take = int(np.floor(len(members) * share))
        chosen += members[:take].tolist()
        rest += members[take:].tolist()
    chosen += rng.permutation(rest)[: count - len(chosen)].tolist()
    return images.subset(np.sort(np.asarray(chosen, dtype=np.int64)))


def remap_labels(images: ImageSet, names: Sequence[str], model_labels: Sequence[str], where: str) -> ImageSet:
    """``images`` labelled by the model's label indices; a ConfigError (one line) if a class is not the model's."""
    unknown = [name for name in names if name not in model_labels]
    if unknown:
        raise ConfigError(
            f"{where}: classes {', '.join(unknown)} are not the model's labels ({', '.join(model_labels)}); "
            "--init-from fine-tunes on the model's labels or a subset of them"
        )
    table = np.asarray([list(model_labels).index(name) for name in names], dtype=np.int64)
    return ImageSet(images.images, table[images.labels], images.sources)


def _concat(*parts: ImageSet) -> ImageSet:
    return ImageSet(
        np.concatenate([part.images for part in parts]),
        np.concatenate([part.labels for part in parts]),
        [source for part in parts for source in part.sources],
    )


def retrain(config, *, callbacks: Sequence[Any] = ()):
    """Fine-tune ``config.init_from`` on ``config.data`` plus a replay sample of ``config.replay``."""
    from edgecls.adapters.keras_io import load_keras_model, model_info_from_keras

    if config.init_from is None:
        raise ConfigError("--replay needs --init-from MODEL.keras (the deployed model to fine-tune)")
    path = Path(config.init_from)
    if path.suffix != ".keras" or not path.is_file():
        raise ConfigError(f"--init-from {path}: needs an existing .keras model (from edgecls train)")
    started = time.time()
    info = model_info_from_keras(path)
    size, channel_order = tuple(info.input_size), info.channel_order
    new = _new_dataset(config, size, channel_order)
    new_train = remap_labels(new.train, new.class_names, info.labels, config.data)
    new_val = remap_labels(new.val, new.class_names, info.labels, config.data)
    parts, old_val, replayed = [new_train], None, 0
    if config.replay is not None:
        old = _old_dataset(config.replay, info, size, channel_order)
        count = replay_count(len(new_train), len(old.train), config.replay_fraction)
        replay = sample_replay(old.train, count, config.seed)
        parts.append(replay)
        old_val, replayed = old.val, len(replay)
    log.info(
        "fine-tuning %s on %d new images (%s) + %d replayed (%s); validating on %d new + %d old",
        path,
        len(new_train),
        config.data,
        replayed,
        config.replay or "no replay",
        len(new_val),
        len(old_val) if old_val is not None else 0,
    )
    val = _concat(new_val, old_val) if old_val is not None else new_val
    # named after the new folder, with its split: what `edgecls evaluate` of the retrained model rebuilds by
    # default (a "<new>+replay" name was no folder: evaluate, and the pipeline's confusion matrix, failed on it)
    dataset = Dataset(
        new.name,
        tuple(info.labels),
        _concat(*parts),
        val,
        channel_order,
        new.skipped,
        {**new.split, "retrain": {"replay": config.replay, "n_replay": replayed}},
    )
    model = load_keras_model(path)
    run_dir = config.run_dir()
    config = replace(config, model=str(info.provenance.get("source_model", config.model)), weights=str(path))
    config = config.resolved(keras_base_from_scratch=False)  # a trained model goes on learning: 1e-3, 20 epochs
    watch = chance_watch(dataset.val.labels)
    history = fit(model, dataset, config.fit_options(), run_dir=run_dir, callbacks=[*callbacks, watch])
    history["phase"] = [1.0] * len(history.get("val_accuracy", []))
    write_json(run_dir / "config.json", {"options": _options(config), "init_from": str(path)})
    result = finish(model, dataset, config, run_dir, history, channel_order, started, watch)
    validation = {"new": _top1(model, new_val, config.batch_size, config.data)}
    if old_val is not None:
        validation["old"] = _top1(model, old_val, config.batch_size, config.replay)
    validation["n_new_train"], validation["n_replay"] = len(new_train), replayed
    result.validation = validation
    write_json(run_dir / "metrics.json", result.to_dict())
    return result


def _new_dataset(config, size, channel_order: str) -> Dataset:
    """The labelled new frames: ``train/`` + ``val/`` as given, else ``<class>/`` split by ``--val-split``. Unlike
    ``load_dataset``, a class with a single frame (collection keeps few of some) goes to training, not an error."""
    root = Path(config.data)
    if (root / "train").is_dir() and (root / "val").is_dir():
        return load_dataset(str(root), image_size=size, channel_order=channel_order, seed=config.seed)
    if not root.is_dir() or not any(p.is_dir() for p in root.iterdir()):
        raise DataError(f"--data {root}: needs <class>/ subfolders of labelled frames (named after the model's labels)")
    images, names, skipped = load_images(root, image_size=size, channel_order=channel_order)
    if len(images) == 0:
        raise DataError(f"--data {root}: no decodable images in its <class>/ subfolders")
    val_indices = stratified_val_indices(images.labels, config.val_split, config.seed)
    train_mask = np.ones(len(images), dtype=bool)
    train_mask[val_indices] = False
    split = {"mode": "stratified", "seed": config.seed, "val_split": config.val_split, "n_val": len(val_indices)}
    return Dataset(
        str(root),
        names,
        images.subset(np.flatnonzero(train_mask)),
        images.subset(val_indices),
        channel_order,
        skipped,
        split,
    )


def _old_dataset(replay: str, info, size, channel_order: str) -> Dataset:
    """The original data, split as the model's provenance says it was (else the defaults), with its labels."""
    split = info.provenance.get("split") or {}
    old = load_dataset(
        replay,
        image_size=size,
        channel_order=channel_order,
        val_split=float(split.get("val_split", 0.2)),
        seed=int(split.get("seed", 0)),
    )
    if tuple(old.class_names) != tuple(info.labels):
        raise DataError(
            f"--replay {replay}: classes {', '.join(old.class_names)} are not the model's labels "
            f"({', '.join(info.labels)}); replay the data the model was trained on"
        )
    recorded = split.get("val_sources_sha256")
    if recorded and recorded != old.split.get("val_sources_sha256"):
        log.warning("--replay %s: its validation split is not the one the model was validated on", replay)
    return old


def _top1(model, images: ImageSet, batch_size: int, data: str) -> dict[str, Any]:
    loss, accuracy = model.evaluate(to_tf_dataset(images, batch_size=batch_size, training=False), verbose=0)
    return {"data": data, "n": len(images), "top1": round(float(accuracy), 6), "loss": round(float(loss), 6)}


def _options(config) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(config)
