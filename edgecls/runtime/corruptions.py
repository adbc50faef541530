"""What cameras do to images: noise, blur, light, compression, at five severities each. numpy and OpenCV only.

The corruptions of ImageNet-C (Hendrycks & Dietterich, 2019) that a camera
produces, with its severity constants where they fit a uint8 frame, plus
``low_light`` (ours: a dark exposure with its sensor noise). Each takes a
uint8 frame as OpenCV gives it (BGR, or gray HxW / HxWx1) *before* the model's
resize and returns one of the same shape and dtype.

ImageNet-C's blur and pixelation constants are in pixels of a 224x224 image;
here they are scaled by ``min(height, width) / 224``, so a severity blurs the
same share of the scene on a 640x480 frame as on the images ImageNet-C was
defined on (a disk of fractional radius is drawn by supersampling, so small
frames still see five distinct severities).

Randomness (noise, the direction of motion) comes from ``image_rng(seed,
index)``: the same seed and image index give the same corrupted image, at every
severity the same noise pattern scaled, on any machine.

>>> frame = cv2.imread("cat.jpg")  # doctest: +SKIP
>>> corrupt(frame, "motion_blur", 3, image_rng(0, 17)).shape == frame.shape  # doctest: +SKIP
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edgecls.base.errors import ConfigError

SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIDE = 224  # ImageNet-C's image side, the unit of its blur and pixelation constants

# ImageNet-C's constants (imagenet_c/corruptions.py), severity 1..5.
GAUSSIAN_NOISE_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)  # in units of the full 0..255 range
SHOT_NOISE_PHOTONS = (60, 25, 12, 5, 3)  # photons at full scale: fewer is noisier
DEFOCUS_BLUR = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # disk radius, then Gaussian sigma (224 px)
MOTION_BLUR = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # streak radius, Gaussian sigma along it (224 px)
BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to HSV value, 0..1
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)  # distance from the mean scaled by this
JPEG_QUALITY = (25, 18, 15, 10, 7)
PIXELATE_FACTOR = (0.6, 0.5, 0.4, 0.3, 0.25)  # side scaled down by this, then back up
# Ours: exposure scaled down, then shot noise at that exposure plus read noise (a sensor in a dim room).
LOW_LIGHT_EXPOSURE = (0.6, 0.45, 0.3, 0.2, 0.12)
LOW_LIGHT_PHOTONS = 120  # photons at full scale at full exposure
LOW_LIGHT_READ_NOISE = 0.01  # Gaussian sigma, share of the full range

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for image ``index`` of a run seeded with ``seed`` (independent streams per image)."""
    return np.random.default_rng([int(seed), int(index)])


def corrupt(frame: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``frame`` (uint8 BGR or gray) under corruption ``name`` at ``severity`` 1..5, same shape and dtype."""
    if name not in _CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(list_corruptions())}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
        raise ValueError(f"a frame is HxW or HxWxC uint8 pixels, got {frame.dtype} of shape {frame.shape}")
    out = _CORRUPTIONS[name](frame, severity - 1, rng)
    return out.reshape(frame.shape)  # OpenCV drops a trailing channel axis of 1


def list_corruptions() -> tuple[str, ...]:
    """Every corruption's name, in the order reports list them."""
    return tuple(_CORRUPTIONS)


@dataclass(frozen=True)
class CorruptionSpec:
    """Which corruptions a scoring run applies, at which severities, seeded how: ``evaluate`` and ``bench`` share it.

    >>> CorruptionSpec.of(["gaussian_noise"], (1, 3)).arguments()
    ['--corruptions', 'gaussian_noise', '--severities', '1,3', '--corruption-seed', '0']
    """

    names: tuple[str, ...]
    severities: tuple[int, ...] = SEVERITIES
    seed: int = 0

    @classmethod
    def of(
        cls, names: Sequence[str] | None = None, severities: Sequence[int] = SEVERITIES, seed: int = 0
    ) -> CorruptionSpec:
        """Checked: ``names`` None or empty means every corruption; unknown names or severities are ConfigErrors."""
        chosen = tuple(names) if names else list_corruptions()
        unknown = [name for name in chosen if name not in _CORRUPTIONS]
        if unknown:
            raise ConfigError(f"unknown corruption {', '.join(unknown)}; choose from {', '.join(list_corruptions())}")
        wrong = [value for value in severities if value not in SEVERITIES]
        if wrong or not severities:
            raise ConfigError(f"severities must lie in 1..5, got {list(severities)}")
        return cls(chosen, tuple(sorted(set(severities))), int(seed))

    def arguments(self) -> list[str]:
        """The ``python -m edgecls.runtime.measure`` arguments that ask for this spec."""
        return [
            "--corruptions",
            ",".join(self.names),
            "--severities",
            ",".join(map(str, self.severities)),
            "--corruption-seed",
            str(self.seed),
        ]


def parse_severities(text: str) -> tuple[int, ...]:
    """``1..5``, ``2-4``, ``1,3,5`` or ``3`` → severities; anything outside 1..5 is a ConfigError."""
    text = text.strip()
    try:
        for separator in ("..", "-"):
            if separator in text:
                low, high = (int(part) for part in text.split(separator, 1))
                values = tuple(range(low, high + 1))
                break
        else:
            values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--severities takes 1..5, 2-4 or 1,3,5; got {text!r}") from None
    if not values or any(value not in SEVERITIES for value in values):
        raise ConfigError(f"--severities must lie in 1..5, got {text!r}")
    return tuple(sorted(set(values)))


def _to_unit(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) / 255.0


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


def _scale(frame: np.ndarray) -> float:
    return float(min(frame.shape[:2]) / REFERENCE_SIDE)


# -- noise ---------------------------------------------------------------------


def gaussian_noise(frame: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(frame.shape, dtype=np.float32)
    return _to_uint8(_to_unit(frame) + GAUSSIAN_NOISE_SIGMA[level] * noise)


def shot_noise(frame: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    photons = SHOT_NOISE_PHOTONS[level]
    return _to_uint8(rng.poisson(_to_unit(frame) * photons).astype(np.float32) / photons)


def low_light(frame: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    dark = _to_unit(frame) * LOW_LIGHT_EXPOSURE[level]  # fewer photons reach the sensor: relatively more noise
    counted = rng.poisson(dark * LOW_LIGHT_PHOTONS).astype(np.float32) / LOW_LIGHT_PHOTONS
    read = LOW_LIGHT_READ_NOISE * rng.standard_normal(frame.shape, dtype=np.float32)
    return _to_uint8(counted + read)


# -- blur ----------------------------------------------------------------------


def disk_kernel(radius: float, *, supersample: int = 8) -> np.ndarray:
    """A normalised disk of (fractional) ``radius`` pixels; pixel weights are their covered share."""
    half = int(np.ceil(radius))
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = np.arange(-half, half + 1, dtype=np.float64)
    fine = (grid[:, None] + offsets[None, :]).reshape(-1)
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2) <= max(radius, 0.5) ** 2
    size = 2 * half + 1
    kernel = inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    return np.asarray(kernel / kernel.sum(), dtype=np.float32)


def defocus_blur(frame: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = DEFOCUS_BLUR[level]
    scale = _scale(frame)
    blurred = cv2.filter2D(frame.astype(np.float32), -1, disk_kernel(radius * scale), borderType=cv2.BORDER_REFLECT)
    # ImageNet-C's alias blur: a small Gaussian that softens the disk's edge
    blurred = cv2.GaussianBlur(blurred, (0, 0), sigmaX=max(sigma * scale, 1e-3), borderType=cv2.BORDER_REFLECT)
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def motion_kernel(radius: float, sigma: float, angle_degrees: float) -> np.ndarray:
    """A one-sided streak: Gaussian weights ``sigma`` along a line of ``radius`` pixels at ``angle_degrees``."""
    half = int(np.ceil(radius))
    size = 2 * half + 1
    kernel = np.zeros((size, size), np.float32)
    steps = np.linspace(0.0, radius, max(8, int(8 * radius)))
    weights = np.exp(-(steps**2) / (2.0 * max(sigma, 1e-3) ** 2))
    angle = np.deg2rad(angle_degrees)
    for step, weight in zip(steps, weights):  # bilinear splat of each point of the streak
        x, y = half + step * np.cos(angle), half + step * np.sin(angle)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        corners = ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy))
        for dx, dy, share in corners:
            if 0 <= y0 + dy < size and 0 <= x0 + dx < size:
                kernel[y0 + dy, x0 + dx] += weight * share
    return np.asarray(kernel / kernel.sum(), dtype=kernel.dtype)


def motion_blur(frame: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = MOTION_BLUR[level]
    scale = _scale(frame)
    angle = rng.uniform(-45.0, 45.0)  # drawn first: the same direction at every severity of one image
    kernel = motion_kernel(radius * scale, sigma * scale, angle)
    blurred = cv2.filter2D(frame.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT)
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


# -- light ---------------------------------------------------------------------


def brightness(frame: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    shift = BRIGHTNESS_SHIFT[level]
    if frame.ndim == 2 or frame.shape[2] == 1:  # gray: the value is the pixel
        return _to_uint8(_to_unit(frame) + shift)
    hsv = cv2.cvtColor(_to_unit(frame), cv2.COLOR_BGR2HSV)  # float HSV: V in 0..1
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + shift, 0.0, 1.0)
    return _to_uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR))


def contrast(frame: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    unit = _to_unit(frame)
    mean = unit.mean(axis=(0, 1), keepdims=True) if unit.ndim == 3 else unit.mean()
    return _to_uint8((unit - mean) * CONTRAST_FACTOR[level] + mean)


# -- the pipe to the model -------------------------------------------------------


def jpeg_compression(frame: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY[level]])
    if not ok:
        raise ValueError(f"OpenCV could not JPEG-encode a frame of shape {frame.shape}")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ValueError(f"OpenCV could not decode its own JPEG of a frame of shape {frame.shape}")
    return decoded


def jpeg_bytes(frame: np.ndarray, severity: int) -> int:
    """Size of ``frame`` JPEG-encoded at ``severity``'s quality (what the corruption throws away shows here)."""
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY[severity - 1]])
    return int(encoded.size) if ok else 0


def pixelate(frame: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    height, width = frame.shape[:2]
    factor = PIXELATE_FACTOR[level]
    small = cv2.resize(frame, (max(1, int(width * factor)), max(1, int(height * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)


_CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "brightness": brightness,
    "low_light": low_light,
    "contrast": contrast,
    "jpeg_compression": jpeg_compression,
    "pixelate": pixelate,
}
