"""Calibration data: a folder of images → uint8 batches at the model's input contract.

One ``CalibrationSet`` feeds both INT8 paths (the LiteRT converter's
representative dataset and ONNX Runtime's ``CalibrationDataReader``): it is a
plain iterable of ``(N, H, W, C)`` uint8 batches, decoded and resized by the
same ``edgecls.data`` / ``edgecls.runtime.preprocess`` code that prepared the
training images, so calibration cannot see different pixels than training did.
Normalisation is inside the model, so the batches are raw pixels 0..255.

The images used are recorded in a manifest (file, class, SHA-256 of the bytes)
written beside the artifacts, so a calibration can be repeated exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.base.errors import ConfigError, DataError
from edgecls.base.fileio import write_json
from edgecls.data import ImageSet, load_dataset, load_images, write_image
from edgecls.runtime.metadata import ModelInfo
from edgecls.runtime.preprocess import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

MIN_RECOMMENDED_IMAGES = 100
MANIFEST_SCHEMA = "edgecls/calibration-manifest/1"
CHANNELS_BY_ORDER = {"GRAY": 1, "RGB": 3}


@dataclass
class CalibrationSet:
    """Calibration images at the model's input size and channel order.

    Iterating yields uint8 NHWC batches of ``batch_size`` images (the last
    one may be smaller); ``batches(n)`` gives another batch size.

    >>> calibration = load_calibration("calib_data/digits", info)  # doctest: +SKIP
    >>> next(iter(calibration)).shape  # doctest: +SKIP
    (1, 32, 32, 1)
    """

    folder: str
    images: np.ndarray  # (N, H, W, C) uint8, raw pixels 0..255
    labels: np.ndarray  # (N,) int64 index into class_names; -1 in a flat folder
    sources: list[str]  # file paths, in the order of ``images``
    class_names: tuple[str, ...]
    channel_order: str
    seed: int = 0
    requested_size: int = 0
    available: int = 0  # decodable images in the folder before sampling
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    batch_size: int = 1

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.batches(self.batch_size)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self), batch_size):
            yield self.images[start : start + batch_size]

    def manifest(self) -> dict[str, Any]:
        """What was used, exactly: enough to repeat the calibration or audit it."""
        root = Path(self.folder)
        files = []
        for source, label in zip(self.sources, self.labels.tolist()):
            path = Path(source)
            files.append(
                {
                    "file": _relative(path, root),
                    "class": self.class_names[label] if label >= 0 else None,
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                }
            )
        return {
            "schema": MANIFEST_SCHEMA,
            "folder": str(self.folder),
            "input_size": list(self.images.shape[1:3]),
            "channel_order": self.channel_order,
            "seed": self.seed,
            "requested_size": self.requested_size,
            "available": self.available,
            "n_images": len(self),
            "per_class": self.per_class_counts(),
            "skipped": self.skipped,
            "files": files,
        }

    def per_class_counts(self) -> dict[str, int]:
        if not self.class_names:
            return {}
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, counts)}


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON: one number that names a calibration."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode("utf-8")).hexdigest()


def write_manifest(calibration: CalibrationSet, path: str | Path) -> tuple[Path, str]:
    """Write the manifest atomically; return its path and digest."""
    manifest = calibration.manifest()
    digest = manifest_digest(manifest)
    write_json(path, {**manifest, "sha256": digest})
    return Path(path), digest


def load_calibration(
    folder: str | Path, info: ModelInfo, *, size: int = 300, seed: int = 0, batch_size: int = 1
) -> CalibrationSet:
    """Load up to ``size`` images of ``folder`` as the model ``info`` describes them.

    ``folder`` is ``<class>/*.png`` (sampled stratified by class with ``seed``)
    or a flat folder of images (sampled uniformly). Fewer than 100 images, or
    classes of the model missing from the folder, give a warning with the
    numbers; an empty folder or a model whose channels no image can be
    converted to is a ``DataError``.
    """
    root = Path(folder)
    if size < 1:
        raise ConfigError(f"--calib-size must be at least 1, got {size}")
    if not root.exists():
        raise DataError(
            f"{root}: no such calibration folder; make one with `edgecls calib-data --from DATA --out {root}`"
        )
    if not root.is_dir():
        raise DataError(f"{root}: --calib must be a folder of images (or of <class>/ subfolders of images)")
    _check_channels(info)
    try:
        images, class_names, skipped = load_images(root, image_size=info.input_size, channel_order=info.channel_order)
    except (KeyError, ValueError) as exc:  # an image layout to_model_pixels cannot convert (e.g. 2-channel PNG)
        raise DataError(
            f"{root}: a calibration image cannot be converted to the model's {info.channel_order} input ({exc!r}); use "
            "8-bit gray, RGB or RGBA images"
        ) from exc
    if len(images) == 0:
        where = (
            f"its class folders ({', '.join(class_names[:5])}{'…' if len(class_names) > 5 else ''})"
            if class_names
            else "it"
        )
        raise DataError(
            f"{root}: no decodable images ({', '.join(IMAGE_SUFFIXES)}) in {where}; INT8 calibration needs "
            "representative images, ideally 100 to 500"
        )
    if images.images.shape[-1] != info.channels:
        raise DataError(
            f"{root}: calibration images give {images.images.shape[-1]} channels but the model takes {info.channels}"
        )
    chosen = stratified_sample(images.labels, size, seed)
    picked = images.subset(chosen)
    calibration = CalibrationSet(
        folder=str(root),
        images=picked.images,
        labels=picked.labels,
        sources=picked.sources,
        class_names=class_names,
        channel_order=info.channel_order,
        seed=seed,
        requested_size=size,
        available=len(images),
        skipped=skipped,
        batch_size=batch_size,
    )
    calibration.warnings.extend(_coverage_warnings(calibration, info))
    for message in calibration.warnings:
        log.warning("%s", message)
    return calibration


def _check_channels(info: ModelInfo) -> None:
    expected = CHANNELS_BY_ORDER.get(info.channel_order)
    if expected is None or expected != info.channels:
        raise DataError(
            f"the model takes {info.channels} channel(s) in order {info.channel_order!r}; calibration images can only "
            "be converted to GRAY (1 channel) or RGB (3 channels), as training did; re-train the model with --channels "
            "gray|rgb"
        )


def _coverage_warnings(calibration: CalibrationSet, info: ModelInfo) -> list[str]:
    messages = []
    root = calibration.folder
    if len(calibration) < MIN_RECOMMENDED_IMAGES:
        messages.append(
            f"{root}: only {len(calibration)} calibration images (of {calibration.available} available); "
            f"{MIN_RECOMMENDED_IMAGES} or more give stable INT8 ranges"
        )
    if calibration.class_names:
        present = {name for name, count in calibration.per_class_counts().items() if count}
        missing = [label for label in info.labels if label not in present]
        unknown = sorted(present - set(info.labels))
        if missing:
            shown = ", ".join(missing[:10]) + ("…" if len(missing) > 10 else "")
            messages.append(
                f"{root}: {len(missing)} of the model's {len(info.labels)} classes have no calibration images: {shown}"
            )
        if unknown:
            messages.append(
                f"{root}: class folders the model does not know: {', '.join(unknown[:10])}; is this the right "
                "calibration set?"
            )
    return messages


def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of ``size`` items, each class represented in proportion, chosen by ``seed``.

    Every class with images gets at least one (while ``size`` allows); the
    result is sorted, so the order of a calibration is deterministic.
    """
    count = len(labels)
    if size >= count:
        return np.arange(count)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts * size / count).astype(int)
    if size >= len(classes):
        quota = np.maximum(quota, 1)
    # Hand out what rounding left over to the classes with the largest remainders.
    while quota.sum() < size:
        remainders = counts * size / count - quota
        remainders[quota >= counts] = -1.0
        quota[int(np.argmax(remainders))] += 1
    while quota.sum() > size:
        quota[int(np.argmax(quota))] -= 1
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:take] for label, take in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


# --- `edgecls calib-data`: a calibration folder from a data set's training split ---


@dataclass(frozen=True)
class CalibDataConfig:
    """Options of ``edgecls calib-data``; defaults are the CLI's defaults.

    ``val_split`` and ``seed`` must be those the model was trained with (the
    ``edgecls train`` defaults), so that no validation image is calibrated on.
    """

    source: str = "digits"
    out: str = "calib_data/digits"
    n: int = 300
    seed: int = 0
    val_split: float = 0.2


@dataclass
class CalibDataResult:
    out: str
    source: str
    n_images: int
    per_class: dict[str, int]
    split: str  # always "train": calibration never sees the validation images
    val_split: float
    seed: int


def make_calibration_folder(config: CalibDataConfig) -> CalibDataResult:
    """Write ``config.n`` images of the source's TRAINING split into ``out/<class>/``.

    Digits (8x8 gray) are written as lossless PNGs of their 0..255 pixels, which
    load back to exactly the pixels training used; images of a folder are copied
    byte for byte. ``out/source.json`` records where each file came from.

    >>> make_calibration_folder(CalibDataConfig("digits", "calib_data/digits", n=300))  # doctest: +SKIP
    """
    out = Path(config.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; choose another --out or remove it first")
    size = (8, 8) if config.source == "digits" else (32, 32)  # folders: decoded only to split; the files are copied
    dataset = load_dataset(config.source, image_size=size, val_split=config.val_split, seed=config.seed)
    if config.n < 1:
        raise ConfigError(f"--n must be at least 1, got {config.n}")
    train: ImageSet = dataset.train
    chosen = train.subset(stratified_sample(train.labels, config.n, config.seed))
    staging = out.with_name(f".{out.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    records = []
    for pixels, label, source in zip(chosen.images, chosen.labels.tolist(), chosen.sources):
        class_dir = staging / dataset.class_names[label]
        class_dir.mkdir(parents=True, exist_ok=True)
        if config.source == "digits":
            target = class_dir / f"{source.replace('#', '_')}.png"
            write_image(target, pixels)
        else:
            target = class_dir / Path(source).name
            if target.exists():  # same name in two nested folders of one class
                target = class_dir / f"{len(records):05d}_{Path(source).name}"
            shutil.copyfile(source, target)
        records.append({"file": target.relative_to(staging).as_posix(), "source": source})
    write_json(
        staging / "source.json",
        {
            "from": config.source,
            "split": "train",
            "val_split": config.val_split,
            "seed": config.seed,
            "n": len(records),
            "command": f"edgecls calib-data --from {config.source} --n {config.n} --seed {config.seed} --val-split "
            f"{config.val_split} --out {config.out}",
            "files": records,
        },
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()  # empty (checked above)
    staging.rename(out)
    counts = np.bincount(chosen.labels, minlength=dataset.num_classes)
    return CalibDataResult(
        out=str(out),
        source=config.source,
        n_images=len(records),
        per_class={n: int(c) for n, c in zip(dataset.class_names, counts)},
        split="train",
        val_split=config.val_split,
        seed=config.seed,
    )
