"""Sources with no camera behind them: ``test://`` (synthetic frames carrying their number) and a folder of images.

A ``test://`` frame has its number written twice: as text a person reads, and in the first four pixels of its
top row (the number's four bytes, little-endian, in every channel), which ``synthetic_frame_number`` reads back.
A test or a benchmark can then tell which frame it was handed, and how old it is.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from edgecls.base.errors import CameraError
from edgecls.runtime.camera.uri import SourceSpec
from edgecls.runtime.preprocess import IMAGE_SUFFIXES, read_image

log = logging.getLogger(__name__)

STAMP_PIXELS = 4  # the frame number's bytes, little-endian, in row 0


class SyntheticReader:
    """``test://?size=WxH&fps=F&frames=N``: colour bars and a moving gradient, numbered; N frames (0: endless).

    It makes frames as fast as asked; the frame source paces them at ``fps``, as a camera would deliver them.
    """

    def __init__(self, spec: SourceSpec) -> None:
        width, height = spec.size or (640, 480)
        self.description = f"test source {width}x{height} at {spec.fps:g} fps" if spec.fps else "test source"
        self.fps = float(spec.fps or 30.0)
        self.frames = int(spec.options.get("frames", "0"))
        self._background = _colour_bars(width, height)
        self._next = 0

    def read(self) -> tuple[np.ndarray, float] | None:
        if self.frames and self._next >= self.frames:
            return None
        image = synthetic_frame(self._background, self._next)
        self._next += 1
        return image, time.monotonic()

    def reopen(self) -> None:
        self._next = 0

    def close(self) -> None:
        pass


def synthetic_frame(background: np.ndarray, number: int) -> np.ndarray:
    """``background`` with a band that moves one row a frame, ``number`` drawn in text and stamped in row 0."""
    image = background.copy()
    height = image.shape[0]
    row = number % max(height - 8, 1)
    image[row : row + 8] = 255 - image[row : row + 8]
    cv2.putText(image, f"frame {number}", (10, height - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    image[0, :STAMP_PIXELS] = np.frombuffer(int(number).to_bytes(STAMP_PIXELS, "little"), np.uint8)[:, None]
    return image


def synthetic_frame_number(image: np.ndarray) -> int:
    """The number a ``test://`` frame carries (see ``synthetic_frame``)."""
    return int.from_bytes(image[0, :STAMP_PIXELS, 0].astype(np.uint8).tobytes(), "little")


def _colour_bars(width: int, height: int) -> np.ndarray:
    """Seven vertical colour bars (BGR) over a horizontal gray ramp in the bottom quarter."""
    bars = np.array(
        [[192, 192, 192], [0, 192, 192], [192, 192, 0], [0, 192, 0], [192, 0, 192], [0, 0, 192], [192, 0, 0]],
        dtype=np.uint8,
    )
    columns = np.minimum(np.arange(width) * len(bars) // width, len(bars) - 1)
    image = np.repeat(bars[columns][None], height, axis=0)
    ramp = np.linspace(0, 255, width, dtype=np.float32).astype(np.uint8)
    image[height * 3 // 4 :] = ramp[None, :, None]
    return np.ascontiguousarray(image)


class FolderReader:
    """The images of a folder (and its subfolders), sorted by path; one that does not decode is skipped and logged."""

    def __init__(self, spec: SourceSpec) -> None:
        folder = Path(spec.location)
        self.paths = sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise CameraError(f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.description = f"folder {folder} ({len(self.paths)} images)"
        self.fps = 0.0
        self.skipped_files: list[Path] = []
        self._next = 0

    def read(self) -> tuple[np.ndarray, float] | None:
        while self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            image = read_image(path)
            if image is not None:
                return image, time.monotonic()
            self.skipped_files.append(path)
            log.warning("%s: not an image OpenCV decodes, skipped", path)
        return None

    def reopen(self) -> None:
        self._next = 0

    def close(self) -> None:
        pass
