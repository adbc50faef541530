"""Reading a data set: an image folder (split stratified, or ``train/`` + ``val/``) or the built-in ``digits``.

Every image is decoded and resized once, by the runtime's own preprocessing
(``edgecls.runtime.preprocess``), so training, calibration, evaluation and the
device all see the same pixels. Images are held in memory as uint8 at the
model's input size (10,000 images at 96x96x3 take 276 MB), or, past a memory
budget, decoded once into a disk cache and streamed from it each epoch
(``cache="disk"``; ``edgecls.data.cache``).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import edgecls.data.cache as datacache
from edgecls.base.errors import DataError
from edgecls.data.sets import Dataset, ImageSet, default_channel_order
from edgecls.runtime.preprocess import IMAGE_SUFFIXES, to_model_pixels

log = logging.getLogger(__name__)


def load_dataset(
    data: str,
    *,
    image_size: tuple[int, int],
    channel_order: str | None = None,
    val_split: float = 0.2,
    seed: int = 0,
    cache: str = "memory",
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Load ``digits`` or an image folder, split stratified by class with ``seed``.

        A folder is ``root/<class>/*.jpg`` (split here) or ``root/train/<class>/…``
        plus ``root/val/<class>/…`` (split as given). Undecodable files are skipped
        with a warning and listed in ``Dataset.skipped``. ``cache`` (``memory``, ``disk``,
    ``none``, ``auto``: ``edgecls.data.cache``) says where a folder's pixels are kept;
    ``disk`` writes into ``cache_dir``. The built-in digits always stay in memory.

        >>> ds = load_dataset("digits", image_size=(32, 32))  # doctest: +SKIP
        >>> len(ds.train), len(ds.val), ds.class_names[:2]  # doctest: +SKIP
        (1438, 359, ('0', '1'))
    """
    if not 0.0 < val_split < 1.0:
        raise DataError(f"--val-split must be between 0 and 1 (exclusive), got {val_split}")
    channel_order = channel_order or default_channel_order(data)
    if data == "digits":
        everything, class_names = _load_digits(image_size, channel_order), tuple(str(d) for d in range(10))
        return _split(data, everything, class_names, channel_order, [], val_split, seed)
    root = Path(data)
    if not root.exists():
        raise DataError(f"{root}: no such data folder; pass --data digits or a folder of <class>/ subfolders")
    if not root.is_dir():
        raise DataError(f"{root}: --data must be a folder of <class>/ subfolders, or digits")
    if (root / "train").is_dir() and (root / "val").is_dir():
        class_names = _class_names(root / "train")
        extra = sorted(
            p.name
            for p in (root / "val").iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name not in class_names
        )
        if extra:
            raise DataError(
                f"{root / 'val'}: class folders {', '.join(extra)} are not in {root / 'train'} "
                f"({', '.join(class_names)}); val/ must use train/'s classes"
            )
        listed = {part: _list_folder(root / part, class_names) for part in ("train", "val")}
        mode = _resolve_cache(cache, cache_dir, sum(len(f) for f, _ in listed.values()), image_size, channel_order)
        train, skipped_train = _decode_part(
            root / "train", "train", listed["train"], class_names, image_size, channel_order, mode, cache_dir
        )
        val, skipped_val = _decode_part(
            root / "val", "val", listed["val"], class_names, image_size, channel_order, mode, cache_dir
        )
        _require_images(train, root / "train", class_names)
        if len(val) == 0:
            raise DataError(
                f"{root / 'val'}: no decodable images in <class>/ subfolders ({', '.join(class_names)}); a validation "
                "split needs some"
            )
        split = {"mode": "folders", "val_sources_sha256": _digest(val.sources), "n_val": len(val)}
        return Dataset(str(root), class_names, train, val, channel_order, skipped_train + skipped_val, split, mode)
    class_names = _class_names(root)
    files, labels = _list_folder(root, class_names)
    mode = _resolve_cache(cache, cache_dir, len(files), image_size, channel_order)
    everything, skipped = _decode_part(
        root, "all", (files, labels), class_names, image_size, channel_order, mode, cache_dir
    )
    _require_images(everything, root, class_names)
    dataset = _split(str(root), everything, class_names, channel_order, skipped, val_split, seed)
    dataset.cache = mode
    return dataset


def _resolve_cache(
    cache: str, cache_dir: str | Path | None, n_images: int, image_size: tuple[int, int], channel_order: str
) -> str:
    mode = datacache.resolve_mode(cache, n_images, (*image_size, 1 if channel_order == "GRAY" else 3))
    if mode == "disk" and cache_dir is None:
        raise DataError("--cache disk needs a folder for the decoded images (cache_dir); pass one")
    return mode


def _decode_part(
    root: Path,
    part: str,
    listed: tuple[list[Path], list[int]],
    class_names: Sequence[str],
    image_size: tuple[int, int],
    channel_order: str,
    mode: str,
    cache_dir: str | Path | None,
) -> tuple[ImageSet, list[str]]:
    """Decode one folder's listed files where ``mode`` keeps them: in memory, into the disk cache, or nowhere."""
    files, labels = listed
    if mode == "memory":
        return _decode_files(files, labels, image_size, channel_order)
    if mode == "disk":
        key = datacache.cache_key(root, class_names, image_size, channel_order)
        found = datacache.disk_cache(
            files,
            labels,
            image_size=image_size,
            channel_order=channel_order,
            cache_dir=Path(cache_dir),
            part=part,
            key=key,
        )
    else:
        found = datacache.decodable_files(files, labels, image_size=image_size, channel_order=channel_order)
    images, kept_labels, sources, skipped = found
    for path in skipped:
        log.warning("skipped %s: not a decodable image (empty, truncated or not an image)", path)
    return ImageSet(images, kept_labels, sources), skipped


def load_images(
    folder: str | Path, *, image_size: tuple[int, int], channel_order: str, class_names: Sequence[str] | None = None
) -> tuple[ImageSet, tuple[str, ...], list[str]]:
    """Load every image of a ``<class>/`` folder (or a flat folder, label -1)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = tuple(class_names) if class_names else tuple(subfolders)
    if subfolders:
        images, skipped = _load_folder(folder, names, image_size, channel_order)
    else:
        entries = [p for p in folder.iterdir() if p.is_file()]
        files = sorted(p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES)
        _warn_left_out(folder, entries)
        images, skipped = _decode_files(files, [-1] * len(files), image_size, channel_order)
    return images, names, skipped


def training_image_count(data: str, val_split: float = 0.2) -> int:
    """How many images ``load_dataset`` would train on, counted from the file names (nothing decoded): what a
    budget in optimiser steps resolves to epochs with, before the data are loaded (a pipeline stage's key)."""
    if data == "digits":
        return 1797 - round(1797 * val_split)  # scikit-learn's 1,797 digits, split stratified by class
    root = Path(data)
    if not root.is_dir():
        return 0
    if (root / "train").is_dir() and (root / "val").is_dir():
        root = root / "train"
        val_split = 0.0
    total = sum(1 for path in root.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    return total - round(total * val_split)


DIGITS_ON_A_DEVICE = (
    'digits is built into scikit-learn, a workstation package (pip install "edgecls[train]"); on a device, '
    "score a folder of <label>/ images, or write the digits evaluation set on the workstation and copy it over "
    "(edgecls bench --remote does both)"
)


def _load_digits(image_size: tuple[int, int], channel_order: str) -> ImageSet:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # a device install: the data set is on the workstation
        raise DataError(DIGITS_ON_A_DEVICE) from None

    digits = load_digits()
    # 8x8 values 0..16 → 0..255 pixels, then the runtime's own resize.
    raw = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.stack([to_model_pixels(image, image_size, channel_order) for image in raw])
    return ImageSet(images, digits.target.astype(np.int64), [f"digits#{i}" for i in range(len(raw))])


def _class_names(root: Path) -> tuple[str, ...]:
    names = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not names:
        raise DataError(f"{root}: no class folders found; expected {root}/<class>/*.jpg (one subfolder per class)")
    if len(names) == 1:
        raise DataError(f"{root}: only one class folder ({names[0]!r}); a classifier needs at least two")
    return names


def _load_folder(
    root: Path, class_names: Sequence[str], image_size: tuple[int, int], channel_order: str
) -> tuple[ImageSet, list[str]]:
    files, labels = _list_folder(root, class_names)
    return _decode_files(files, labels, image_size, channel_order)


def _list_folder(root: Path, class_names: Sequence[str]) -> tuple[list[Path], list[int]]:
    """The image files of ``root/<class>/`` (sorted, recursively) and their labels; left-out files are counted."""
    files: list[Path] = []
    labels: list[int] = []
    seen: list[Path] = []
    for index, name in enumerate(class_names):
        class_dir = root / name
        if not class_dir.is_dir():
            continue
        everything = [p for p in class_dir.rglob("*") if p.is_file()]
        found = sorted(p for p in everything if p.suffix.lower() in IMAGE_SUFFIXES)
        seen += everything
        files += found
        labels += [index] * len(found)
    _warn_left_out(root, seen)
    return files, labels


def _warn_left_out(root: Path, files: Sequence[Path]) -> None:
    """Say how many of ``files`` are not read for their suffix (hidden ones aside): an iPhone's HEIC photos, say."""
    suffixes = Counter(
        p.suffix.lower() or "(none)"
        for p in files
        if not p.name.startswith(".") and p.suffix.lower() not in IMAGE_SUFFIXES
    )
    if suffixes:
        counted = ", ".join(f"{suffix} {count}" for suffix, count in suffixes.most_common())
        hint = "; convert HEIC/HEIF photos to JPEG first" if {".heic", ".heif"} & set(suffixes) else ""
        log.warning(
            "%s: left out %d files that are not %s images (%s)%s",
            root,
            sum(suffixes.values()),
            "/".join(IMAGE_SUFFIXES),
            counted,
            hint,
        )


def _decode_files(
    files: Sequence[Path], labels: Sequence[int], image_size: tuple[int, int], channel_order: str
) -> tuple[ImageSet, list[str]]:
    """Decode every file straight into one preallocated uint8 array (a list of images and ``np.stack``
    held the pixels twice: 2.3x their size at the peak, ``benchmarks/scale.py``); undecodable ones are
    squeezed out in place."""
    load = datacache.pixel_loader(image_size, channel_order)  # the same decode as the disk cache's
    channels = 1 if channel_order == "GRAY" else 3
    images = np.empty((len(files), *image_size, channels), np.uint8)

    def decode_into(index: int) -> bool:
        pixels = load(files[index])
        if pixels is None:
            return False
        images[index] = pixels.reshape(images.shape[1:])
        return True

    with ThreadPoolExecutor(max_workers=4) as pool:  # OpenCV releases the GIL while decoding
        decoded = list(pool.map(decode_into, range(len(files))))
    keep = [i for i, ok in enumerate(decoded) if ok]
    skipped = [str(files[i]) for i, ok in enumerate(decoded) if not ok]
    for path in skipped:
        log.warning("skipped %s: not a decodable image (empty, truncated or not an image)", path)
    images = _keep_rows_in_place(images, np.asarray(keep, dtype=np.int64))
    return ImageSet(
        images, np.asarray([labels[i] for i in keep], dtype=np.int64), [str(files[i]) for i in keep]
    ), skipped


def _keep_rows_in_place(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` for ascending ``rows``, moved forward inside ``array`` rather than copied: row
    ``rows[j] >= j`` is read before anything at or after ``j`` is written, so nothing is overwritten unread."""
    for position, row in enumerate(rows.tolist()):
        if row != position:
            array[position] = array[row]
    return array[: len(rows)]


def _require_images(images: ImageSet, root: Path, class_names: Sequence[str]) -> None:
    if len(images) == 0:
        raise DataError(f"{root}: no decodable images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    present = set(images.labels.tolist())
    if len(present) < 2:
        raise DataError(f"{root}: images found for only one class; a classifier needs at least two")
    empty = [name for i, name in enumerate(class_names) if i not in present]
    if empty:
        log.warning("%s: class folders with no decodable images: %s", root, ", ".join(empty))


def _split(
    name: str,
    everything: ImageSet,
    class_names: tuple[str, ...],
    channel_order: str,
    skipped: list[str],
    val_split: float,
    seed: int,
) -> Dataset:
    _require_splittable(name, everything.labels, class_names)
    val_indices = stratified_val_indices(everything.labels, val_split, seed)
    train_mask = np.ones(len(everything), dtype=bool)
    train_mask[val_indices] = False
    val = everything.subset(val_indices)  # a copy (the smaller part); training keeps the rows where they are
    train = _train_part(everything, np.flatnonzero(train_mask))
    split = {
        "mode": "stratified",
        "seed": seed,
        "val_split": val_split,
        "n_val": len(val),
        "val_sources_sha256": _digest(val.sources),
    }
    return Dataset(name, class_names, train, val, channel_order, skipped, split)


def _train_part(everything: ImageSet, rows: np.ndarray) -> ImageSet:
    """The training rows of a just-decoded set: in memory, moved to the front of its own array (no second
    copy of the pixels); streamed, a subset of the index."""
    if everything.streamed:
        return everything.subset(rows)
    images = _keep_rows_in_place(everything.images, rows)
    return ImageSet(images, everything.labels[rows], [everything.sources[i] for i in rows])


MIN_IMAGES_PER_CLASS = 2  # a split class gives at least one image to training and one to validation


def _require_splittable(name: str, labels: np.ndarray, class_names: Sequence[str]) -> None:
    """Refuse, before any training, a folder whose classes cannot give both the training and the
    validation split an image (one image: the class would be missing from one of them; none in
    validation at all: every validation metric is undefined)."""
    counts = np.bincount(labels, minlength=len(class_names)) if len(labels) else np.zeros(len(class_names), np.int64)
    short = [(class_names[i], int(n)) for i, n in enumerate(counts) if 0 < n < MIN_IMAGES_PER_CLASS]
    if short:
        listed = ", ".join(f"{label!r} has {n}" for label, n in short[:5])
        listed += f" and {len(short) - 5} more" if len(short) > 5 else ""
        raise DataError(
            f"{name}: too few images to split into training and validation ({listed}); "
            f"every class needs at least {MIN_IMAGES_PER_CLASS} images (1 to train, 1 to validate): "
            "add images, or give train/ and val/ folders"
        )


def stratified_val_indices(labels: np.ndarray, val_split: float, seed: int) -> np.ndarray:
    """Indices held out for validation: ``val_split`` of each class, at least one
    per class with two or more images, chosen by ``seed``. Deterministic."""
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        if len(members) < 2:
            continue
        n_val = min(len(members) - 1, max(1, int(round(len(members) * val_split))))
        chosen.append(members[:n_val])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _digest(sources: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sources).encode("utf-8")).hexdigest()
