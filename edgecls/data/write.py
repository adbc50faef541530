"""Writing images and class folders, atomically: the layout ``load_dataset`` reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgecls.base.errors import DataError
from edgecls.base.fileio import atomic_path


def write_image(path: str | Path, pixels: np.ndarray) -> Path:
    """Write ``pixels`` (OpenCV's BGR or gray) atomically, in the format of ``path``'s suffix."""
    import cv2

    path = Path(path)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), pixels):
            raise DataError(f"{path}: OpenCV could not write this {path.suffix.lstrip('.').upper() or 'image'}")
    return path


def write_class_folders(
    root: str | Path,
    images: Sequence[np.ndarray],
    labels: Sequence[int],
    *,
    class_names: Sequence[str] | None = None,
    stems: Sequence[str] | None = None,
) -> list[Path]:
    """``root/<class name>/<stem>.png`` for each image: the folder layout ``load_dataset`` reads, lossless.

    ``class_names[label]`` names a label's folder (default: the label itself);
    ``stems`` the files (default: the image's index, five digits).

    >>> write_class_folders("calib", images, labels, class_names=("cat", "dog"))  # doctest: +SKIP
    [PosixPath('calib/cat/00000.png'), ...]
    """
    root = Path(root)
    paths = []
    for index, (pixels, label) in enumerate(zip(images, labels)):
        folder = class_names[int(label)] if class_names is not None else str(label)
        stem = stems[index] if stems is not None else f"{index:05d}"
        paths.append(write_image(root / folder / f"{stem}.png", pixels))
    return paths
