"""Real-photo class folders cut from photographs shipped inside installed packages.

Each class is one photograph (or texture) from scikit-image (``skimage/data``)
or scikit-learn (``sklearn/datasets/images``). Training patches come from the
left ``split`` of the photo's width and validation patches from the rest: a
patch lies wholly inside its region, so no validation pixel was ever a training
pixel, and a model has to recognise the photo's content, not remember patches.
Patches are squares of random side (``scale`` × the photo's shorter side,
clipped to the region) at random positions, resized to ``patch_size``;
everything is deterministic by ``seed``.

Two sets:

- ``textures4``: brick, grass, gravel, moon (grayscale textures, stored as RGB):
  the 4-class set of issue 15.
- ``photos10``: ten colour photographs (astronaut, chelsea, coffee, motorcycle,
  retina, rocket, Hubble deep field, IHC stain, china, flower): harder, the
  regions of a photo differ more.
- ``photos6``: six grayscale photographs no default was chosen on (camera, coins,
  page, text, cell, clock_motion): a check set.

>>> make_photoset("/tmp/textures", TEXTURES4, train_per_class=150, val_per_class=50)  # doctest: +SKIP
PosixPath('/tmp/textures')

Command line: ``python benchmarks/photoset.py OUT --set photos10 --train 150 --val 50 --size 64``.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TEXTURES4 = ("brick", "grass", "gravel", "moon")
PHOTOS10 = (
    "astronaut",
    "chelsea",
    "coffee",
    "motorcycle_left",
    "retina",
    "rocket",
    "hubble_deep_field",
    "ihc",
    "china",
    "flower",
)
# Six photographs no edgecls default was chosen on (issue 40's check of the from-scratch budget): a portrait, coins,
# a printed page, a text sign, a microscope cell and a clock (grayscale, stored as RGB).
PHOTOS6 = ("camera", "coins", "page", "text", "cell", "clock_motion")
SETS = {"textures4": TEXTURES4, "photos10": PHOTOS10, "photos6": PHOTOS6}
SKLEARN_PHOTOS = ("china", "flower")


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{module} is not installed (pip install scikit-image scikit-learn)")
    return Path(spec.origin).parent


def photo_path(name: str) -> Path:
    """The file of a shipped photograph, by name (``brick``, ``china``, …)."""
    folder = _package_dir("sklearn.datasets") / "images" if name in SKLEARN_PHOTOS else _package_dir("skimage.data")
    matches = sorted(folder.glob(f"{name}.*"))
    if not matches:
        raise FileNotFoundError(f"no photograph {name!r} in {folder}")
    return matches[0]


def load_photo(name: str) -> np.ndarray:
    """A shipped photograph as (H, W, 3) uint8 RGB (grayscale replicated)."""
    from PIL import Image

    with Image.open(photo_path(name)) as image:
        return np.asarray(image.convert("RGB"))


def _patches(
    photo: np.ndarray,
    count: int,
    region: tuple[int, int],
    patch_size: int,
    scale: tuple[float, float],
    rng: np.random.Generator,
) -> list[np.ndarray]:
    from PIL import Image

    height = photo.shape[0]
    left, right = region
    shorter = min(photo.shape[:2])
    out = []
    for _ in range(count):
        side = int(rng.uniform(*scale) * shorter)
        side = max(8, min(side, right - left, height))
        x = int(rng.integers(left, right - side + 1))
        y = int(rng.integers(0, height - side + 1))
        crop = Image.fromarray(photo[y : y + side, x : x + side])
        out.append(np.asarray(crop.resize((patch_size, patch_size), Image.Resampling.BILINEAR, reducing_gap=2.0)))
    return out


def make_photoset(
    root: str | Path,
    classes: Sequence[str] = TEXTURES4,
    *,
    train_per_class: int = 150,
    val_per_class: int = 50,
    patch_size: int = 64,
    split: float = 0.7,
    scale: tuple[float, float] = (0.2, 0.45),
    seed: int = 0,
) -> Path:
    """Write ``root/train/<class>/*.png`` and ``root/val/<class>/*.png``; return ``root``.

    ``split`` is the fraction of each photo's width (from the left) that
    training patches come from; validation patches come from the rest.
    """
    from PIL import Image

    if not 0.0 < split < 1.0:
        raise ValueError(f"split must be in (0, 1), got {split}")
    root = Path(root)
    for index, name in enumerate(classes):
        photo = load_photo(name)
        width = photo.shape[1]
        cut = int(round(width * split))
        rng = np.random.default_rng([seed, index])
        for subset, count, region in (("train", train_per_class, (0, cut)), ("val", val_per_class, (cut, width))):
            folder = root / subset / name
            folder.mkdir(parents=True, exist_ok=True)
            for number, patch in enumerate(_patches(photo, count, region, patch_size, scale, rng)):
                Image.fromarray(patch).save(folder / f"{name}_{number:04d}.png")
    return root


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", choices=sorted(SETS), default="textures4")
    parser.add_argument("--train", type=int, default=150, help="training patches per class")
    parser.add_argument("--val", type=int, default=50, help="validation patches per class")
    parser.add_argument("--size", type=int, default=64, help="patch side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make_photoset(
        args.out,
        SETS[args.set],
        train_per_class=args.train,
        val_per_class=args.val,
        patch_size=args.size,
        seed=args.seed,
    )
    print(args.out)


if __name__ == "__main__":
    main()
