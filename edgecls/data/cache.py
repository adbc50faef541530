"""Where a data set's pixels live while training: in memory, in a decode-once disk cache, or nowhere.

``edgecls train --cache`` chooses:

- ``memory``: every image decoded into one uint8 array (10,000 photos at
  224x224x3 take 1.5 GB).
- ``disk``: every image decoded once, in parallel, by the same
  ``to_model_pixels``, into a flat uint8 file (``<part>.u8``, one row per kept
  image) beside a ``<part>.json`` index (labels, sources, skipped files and the
  key of what was decoded); each epoch reads its batches back with ``pread``
  (the page cache holds them, not the training process). A second run over
  the same folder at the same size reuses the file; a changed folder (a file
  added, removed, rewritten: names, sizes and modification times,
  ``edgecls.base.fileio.folder_digest``) gets a new one.
- ``none``: nothing kept; each epoch decodes from the files again (one pass
  first checks every file decodes, so the split and the skipped list are the
  same as in the other modes).
- ``auto``: ``memory`` when the pixels take at most half of the free RAM
  (psutil), else ``disk``.

A streamed split's ``ImageSet.images`` is a ``StreamedImages``: it answers
``len``, ``shape``, indexing and ``numpy.asarray`` like the in-memory array, and
``edgecls.data.to_tf_dataset`` streams it batch by batch.

>>> mode = resolve_mode("auto", 40_000, (224, 224, 3))  # doctest: +SKIP
'disk'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgecls.base.errors import ConfigError
from edgecls.base.fileio import atomic_path, folder_digest, write_json

log = logging.getLogger(__name__)

CACHE_MODES = ("auto", "memory", "disk", "none")
MEMORY_SHARE = 0.5  # auto keeps pixels in memory up to this share of the free RAM (tf.data copies them once more)
CACHE_FORMAT = 1  # bump when the file layout changes: older caches are rebuilt
DECODE_CHUNK = 256  # files decoded per round: bounds the decoded pixels held at once
DECODE_THREADS = max(2, min(8, os.cpu_count() or 2))  # OpenCV releases the GIL while decoding


def resolve_mode(mode: str, n_images: int, row_shape: Sequence[int]) -> str:
    """``memory``, ``disk`` or ``none`` for ``mode`` (``auto`` decides by the pixels' size and the free RAM)."""
    if mode not in CACHE_MODES:
        raise ConfigError(f"--cache must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    import psutil

    needed = n_images * int(np.prod(row_shape))
    budget = int(psutil.virtual_memory().available * MEMORY_SHARE)
    chosen = "memory" if needed <= budget else "disk"
    log.info(
        "--cache auto: %d images at %s take %.2f GB, %.2f GB is half the free RAM: %s",
        n_images,
        "x".join(str(v) for v in row_shape),
        needed / 1e9,
        budget / 1e9,
        chosen,
    )
    return chosen


# --- row sources: where a streamed split reads its pixels ---------------------------------------


class CachedRows:
    """Rows ``rows`` of a uint8 cache file of ``row_shape`` images, read with ``os.pread``."""

    def __init__(self, path: str | Path, row_shape: Sequence[int], rows: np.ndarray) -> None:
        self.path, self.row_shape, self.rows = Path(path), tuple(int(v) for v in row_shape), np.asarray(rows, np.int64)
        self.row_bytes = int(np.prod(self.row_shape))
        self._fd: int | None = None

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def subset(self, indices: np.ndarray) -> CachedRows:
        return CachedRows(self.path, self.row_shape, self.rows[indices])

    def read(self, indices: np.ndarray) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        out = np.empty((len(indices), *self.row_shape), np.uint8)
        flat = out.reshape(len(indices), self.row_bytes)
        for position, row in enumerate(self.rows[np.asarray(indices, np.int64)]):
            flat[position] = np.frombuffer(os.pread(self._fd, self.row_bytes, int(row) * self.row_bytes), np.uint8)
        return out

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


class DecodedRows:
    """Images decoded from their files at every read (``--cache none``)."""

    def __init__(self, files: Sequence[str], image_size: tuple[int, int], channel_order: str) -> None:
        self.files, self.image_size, self.channel_order = list(files), tuple(image_size), channel_order
        self.row_shape = (*self.image_size, 1 if channel_order == "GRAY" else 3)

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices: np.ndarray) -> DecodedRows:
        return DecodedRows([self.files[i] for i in indices], self.image_size, self.channel_order)

    def read(self, indices: np.ndarray) -> np.ndarray:
        load = pixel_loader(self.image_size, self.channel_order)
        out = np.empty((len(indices), *self.row_shape), np.uint8)
        for position, index in enumerate(np.asarray(indices, np.int64)):
            pixels = load(Path(self.files[int(index)]))
            if pixels is None:  # it decoded in the check pass: the file changed since
                raise FileNotFoundError(f"{self.files[int(index)]}: no longer decodable; the folder changed mid-run")
            out[position] = pixels
        return out


class StreamedImages:
    """An array-like over a row source: ``ImageSet.images`` of a split kept on disk (or not kept)."""

    dtype = np.dtype(np.uint8)

    def __init__(self, source: CachedRows | DecodedRows) -> None:
        self.source = source

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.source), *self.source.row_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.source)

    def subset(self, indices: Sequence[int] | np.ndarray) -> StreamedImages:
        return StreamedImages(self.source.subset(np.asarray(indices, np.int64)))

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self.source.read(indices)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.source.read(np.arange(len(self))[[key]])[0]
        return self.source.read(np.arange(len(self))[key])

    def __iter__(self):
        for start in range(0, len(self), DECODE_CHUNK):
            yield from self.source.read(np.arange(start, min(start + DECODE_CHUNK, len(self))))

    def __array__(self, dtype=None, copy=None):
        pixels = self.source.read(np.arange(len(self)))
        return pixels if dtype is None else pixels.astype(dtype)


# --- decoding ----------------------------------------------------------------------------------


def pixel_loader(image_size: tuple[int, int], channel_order: str) -> Callable[[Path], np.ndarray | None]:
    """The one way a file becomes model pixels: the runtime's ``read_image`` and ``to_model_pixels``."""
    from edgecls.runtime.preprocess import read_image, to_model_pixels

    def load(path: Path) -> np.ndarray | None:
        image = read_image(path)
        return None if image is None else to_model_pixels(image, image_size, channel_order)

    return load


def decode_chunks(files: Sequence[Path], load: Callable[[Path], np.ndarray | None], *, what: str):
    """Yield ``(index, pixels or None)`` for every file, in order, decoded in parallel a chunk at a time,
    logging progress about every 10 % (and at most every 5 s)."""
    started = last = time.monotonic()
    done = 0
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        for start in range(0, len(files), DECODE_CHUNK):
            chunk = files[start : start + DECODE_CHUNK]
            for offset, pixels in enumerate(pool.map(load, chunk)):
                yield start + offset, pixels
            done += len(chunk)
            now = time.monotonic()
            if done == len(files) or now - last >= 5.0:
                last = now
                log.info("%s: decoded %d/%d images (%.0f s)", what, done, len(files), now - started)


def cache_key(root: Path, class_names: Sequence[str], image_size: tuple[int, int], channel_order: str) -> str:
    """What a cache holds: the folder's content digest (names, sizes, mtimes), classes, size and channel order."""
    document = {
        "format": CACHE_FORMAT,
        "folder": str(root.resolve()),
        "digest": folder_digest(str(root)),
        "classes": list(class_names),
        "image_size": list(image_size),
        "channel_order": channel_order,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:20]


def disk_cache(
    files: Sequence[Path],
    labels: Sequence[int],
    *,
    image_size: tuple[int, int],
    channel_order: str,
    cache_dir: Path,
    part: str,
    key: str,
) -> tuple[StreamedImages, np.ndarray, list[str], list[str]]:
    """Decode ``files`` once into ``cache_dir/<part>.u8`` (or reuse it when its key matches);
    returns (the kept images, their labels, their sources, the skipped files)."""
    row_shape = (*image_size, 1 if channel_order == "GRAY" else 3)
    data_path, index_path = cache_dir / f"{part}.u8", cache_dir / f"{part}.json"
    index = _read_index(index_path)
    row_bytes = int(np.prod(row_shape))
    if (
        index is not None
        and index.get("key") == key
        and data_path.is_file()
        and data_path.stat().st_size == len(index["labels"]) * row_bytes
    ):
        log.info("%s: reusing the decoded cache %s (%d images)", part, data_path, len(index["labels"]))
        kept_labels, sources, skipped = index["labels"], index["sources"], index["skipped"]
    else:
        if index is not None:
            log.info("%s: the data changed since %s was decoded: decoding again", part, data_path)
        index_path.unlink(missing_ok=True)  # a cache whose index is gone is never trusted
        kept: list[int] = []
        skipped = []
        load = pixel_loader(image_size, channel_order)
        with atomic_path(data_path) as tmp, open(tmp, "wb") as handle:
            for position, pixels in decode_chunks(files, load, what=f"disk cache {part}"):
                if pixels is None:
                    skipped.append(str(files[position]))
                else:
                    handle.write(np.ascontiguousarray(pixels).tobytes())
                    kept.append(position)
        kept_labels = [int(labels[i]) for i in kept]
        sources = [str(files[i]) for i in kept]
        write_json(
            index_path,
            {"key": key, "row_shape": list(row_shape), "labels": kept_labels, "sources": sources, "skipped": skipped},
        )
        log.info("%s: %d images decoded into %s (%.2f GB)", part, len(kept), data_path, data_path.stat().st_size / 1e9)
    images = StreamedImages(CachedRows(data_path, row_shape, np.arange(len(kept_labels))))
    return images, np.asarray(kept_labels, np.int64), list(sources), list(skipped)


def decodable_files(
    files: Sequence[Path], labels: Sequence[int], *, image_size: tuple[int, int], channel_order: str
) -> tuple[StreamedImages, np.ndarray, list[str], list[str]]:
    """``--cache none``: decode every file once to know which are good, keep nothing."""
    load = pixel_loader(image_size, channel_order)
    kept = [i for i, pixels in decode_chunks(files, load, what="checking files") if pixels is not None]
    kept_set = set(kept)
    skipped = [str(files[i]) for i in range(len(files)) if i not in kept_set]
    sources = [str(files[i]) for i in kept]
    images = StreamedImages(DecodedRows(sources, image_size, channel_order))
    return images, np.asarray([labels[i] for i in kept], np.int64), sources, skipped


def _read_index(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cache_bytes(cache_dir: Path) -> int:
    """Bytes the disk cache holds (0 when there is none)."""
    return sum(p.stat().st_size for p in cache_dir.glob("*") if p.is_file()) if cache_dir.is_dir() else 0
