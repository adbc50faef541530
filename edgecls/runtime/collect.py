"""Keep the frames a deployed model was unsure about, for labelling and retraining. Runs on the device.

A ``Collector`` given to ``Classifier(..., collect=...)`` looks at every
prediction: when the top score is under ``below`` or the top two are closer
than ``margin``, the frame (as the camera gave it, before the resize) is saved
with a JSON sidecar — prediction, every class' score, time, the model file and
its SHA-256. The folder holds at most ``max_files`` frames (the oldest go
first), at most one frame is kept every ``every_s`` seconds, and both files
are written under a temporary name and renamed, so a reader never sees half a
frame. Deciding costs a comparison; only a kept frame pays for its write.

>>> collector = Collector("unsure/", below=0.6, margin=0.1, max_files=500)  # doctest: +SKIP
>>> clf = Classifier("model.tflite", collect=collector)  # doctest: +SKIP
>>> clf.predict(frame)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from edgecls.base.errors import ConfigError
from edgecls.base.fileio import atomic_path, write_json

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"
IMAGE_FORMATS = (".png", ".jpg")


@dataclass(frozen=True)
class Decision:
    keep: bool
    reason: str  # "low score", "small margin", or "" when not kept


class Collector:
    """Saves unsure frames to ``folder``; safe to share between threads and between Classifiers.

    ``image_format`` ``.png`` keeps the frame lossless (what labelling and
    retraining want); ``.jpg`` (quality 95) is a fifth of the size and faster
    to write on a Pi's SD card.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        below: float = 0.6,
        margin: float = 0.1,
        max_files: int = 1000,
        every_s: float = 1.0,
        image_format: str = ".png",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= below <= 1.0 or not 0.0 <= margin <= 1.0:
            raise ConfigError(f"below and margin are scores in 0..1, got below={below}, margin={margin}")
        if max_files < 1:
            raise ConfigError(f"max_files must be 1 or more, got {max_files}")
        if every_s < 0:
            raise ConfigError(f"every_s must be 0 or more seconds, got {every_s}")
        if image_format not in IMAGE_FORMATS:
            raise ConfigError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.below, self.margin, self.max_files, self.every_s = below, margin, max_files, every_s
        self.image_format = image_format
        self._clock = clock
        self._lock = threading.Lock()
        self._last_kept: float | None = None
        self._sequence = itertools.count()
        self._kept = self._existing_frames()  # oldest first, across restarts
        self.seen = 0
        self.saved = 0

    def decide(self, top_score: float, second_score: float) -> Decision:
        """Is a prediction with these two best scores unsure?"""
        if top_score < self.below:
            return Decision(True, "low score")
        if top_score - second_score < self.margin:
            return Decision(True, "small margin")
        return Decision(False, "")

    def consider(
        self,
        frame: np.ndarray,
        labels: Sequence[str],
        scores: np.ndarray | Sequence[float],
        *,
        model: str = "",
        model_sha256: str = "",
    ) -> Path | None:
        """Save ``frame`` when its ``scores`` (one per label) say the model was unsure; the saved path or None."""
        values = np.asarray(scores, dtype=np.float64).reshape(-1)
        order = np.argsort(-values, kind="stable")
        top = float(values[order[0]])
        second = float(values[order[1]]) if values.size > 1 else 0.0
        decision = self.decide(top, second)
        with self._lock:
            self.seen += 1
            if not decision.keep:
                return None
            now = self._clock()
            if self._last_kept is not None and now - self._last_kept < self.every_s:
                return None
            self._last_kept = now
            stem = f"{time.time_ns():020d}-{os.getpid()}-{next(self._sequence):06d}"
        sidecar = {
            "prediction": labels[order[0]],
            "score": round(top, 6),
            "margin": round(top - second, 6),
            "reason": decision.reason,
            "scores": {labels[i]: round(float(values[i]), 6) for i in order},
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "model": model,
            "model_sha256": model_sha256,
            "frame_shape": list(frame.shape),
            "image": stem + self.image_format,
            "thresholds": {"below": self.below, "margin": self.margin},
        }
        image_path = self.folder / (stem + self.image_format)
        self._write_image(image_path, frame)  # outside the lock: threads write in parallel
        write_json(self.folder / (stem + SIDECAR_SUFFIX), sidecar)  # the sidecar last: a pair is complete
        with self._lock:
            self._kept.append(stem)
            self.saved += 1
            dropped = self._drop_oldest()
        for old in dropped:
            for suffix in (*IMAGE_FORMATS, SIDECAR_SUFFIX):
                (self.folder / (old + suffix)).unlink(missing_ok=True)
        return image_path

    def _write_image(self, path: Path, frame: np.ndarray) -> None:
        parameters = [cv2.IMWRITE_JPEG_QUALITY, 95] if self.image_format == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
        with atomic_path(path) as tmp:
            if not cv2.imwrite(str(tmp), frame, parameters):
                raise OSError(f"{path}: OpenCV could not write this frame of shape {frame.shape}")

    def _drop_oldest(self) -> list[str]:
        excess = len(self._kept) - self.max_files
        if excess <= 0:
            return []
        dropped, self._kept = self._kept[:excess], self._kept[excess:]
        return dropped

    def _existing_frames(self) -> list[str]:
        return sorted(path.stem for path in self.folder.glob("*" + SIDECAR_SUFFIX) if not path.name.startswith("."))

    def __repr__(self) -> str:
        return (
            f"Collector({str(self.folder)!r}, below={self.below}, margin={self.margin}, "
            f"max_files={self.max_files}, every_s={self.every_s})"
        )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
