"""``picam://N``: a Raspberry Pi camera module through Picamera2 (libcamera), imported only when such a source opens.

Pi OS drives CSI cameras through libcamera, which OpenCV's V4L2 backend does not open; Picamera2 does. Facts this
module is built on (Picamera2's sources):

- "RGB888" is B, G, R in memory, OpenCV's order: frames need no conversion ("BGR888" would be R, G, B).
- A request's ``SensorTimestamp`` is CLOCK_MONOTONIC in nanoseconds, the clock of ``time.monotonic()``: a frame's
  capture time is the sensor's, not the moment Python saw it.
- ``capture_request()`` hands back the oldest completed request Picamera2 holds, which may predate the call;
  ``flush=True`` waits for one whose exposure started after it. The first capture flushes, so no frame from
  before the source opened comes out; after that the reader thread takes every request as it completes, so the
  newest is always at hand (flushing on every read would wait for a whole new frame after each inference).
- The low-resolution stream ("lores") is scaled by the ISP, not the CPU, and may not exceed the main stream;
  on a Pi 4 (VC4) it must be YUV420, on a Pi 5 (PiSP) it may be RGB888.

``picam://0?size=640x480`` gives 640x480 frames from the main stream. ``main=WxH`` (larger than ``size``) sets
the main stream, which picks the sensor mode and field of view, and the frames come from the lores stream at
``size``: a wide view scaled down by the ISP for the model.

Picamera2 comes from apt only (``python3-picamera2``: libcamera's bindings are not on PyPI), so the venv needs
``--system-site-packages``, and pip's NumPy 2 there breaks ``import picamera2``.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

import cv2
import numpy as np

from edgecls.base.errors import CameraError
from edgecls.runtime.camera.uri import SourceSpec

log = logging.getLogger(__name__)

BUFFERS = 4  # Picamera2's buffer count: one being filled, one held by the reader, spares
PICAMERA_INSTALL = (
    "sudo apt install python3-picamera2 (it is not on PyPI: libcamera's bindings come from apt), then a venv made "
    'with python3 -m venv --system-site-packages and pip install "edgecls[picamera]", which keeps apt\'s NumPy 1.x'
)


def import_picamera2() -> Any:
    """The ``picamera2`` module, or a ``CameraError`` saying how to install it."""
    try:
        return importlib.import_module("picamera2")
    except ImportError as exc:
        raise CameraError(
            f"picam:// needs Picamera2, which is not importable here ({exc}): {PICAMERA_INSTALL}"
        ) from None
    except ValueError as exc:  # "numpy.dtype size changed": apt's compiled modules under pip's NumPy 2
        raise CameraError(
            f"picamera2 does not import under NumPy {np.__version__} ({exc}): a venv over apt's picamera2 needs "
            'apt\'s NumPy 1.x; pip uninstall numpy, or pip install "numpy<2" (edgecls[picamera] holds it there)'
        ) from None


def camera_configuration(picamera2: Any, camera: Any, spec: SourceSpec) -> tuple[dict[str, Any], str]:
    """Picamera2's video configuration for ``spec`` and the stream the frames come from ("main" or "lores")."""
    size = spec.size or (640, 480)
    main = _main_size(spec)
    controls = {"FrameRate": float(spec.fps or 30.0)}
    if main is None or main == size:
        config = camera.create_video_configuration(
            main={"size": size, "format": "RGB888"}, buffer_count=BUFFERS, controls=controls
        )
        return config, "main"
    vc4 = getattr(picamera2.Picamera2, "platform", None) == picamera2.Platform.VC4
    lores_format = "YUV420" if vc4 else "RGB888"  # a Pi 4's ISP gives lores in YUV420 only
    config = camera.create_video_configuration(
        main={"size": main}, lores={"size": size, "format": lores_format}, buffer_count=BUFFERS, controls=controls
    )
    return config, "lores"


def _main_size(spec: SourceSpec) -> tuple[int, int] | None:
    if "main" not in spec.options:
        return None
    width, _, height = spec.options["main"].lower().partition("x")
    main = (int(width), int(height))
    size = spec.size or (640, 480)
    if main[0] < size[0] or main[1] < size[1]:
        raise CameraError(
            f"{spec.uri}: main={main[0]}x{main[1]} is smaller than size={size[0]}x{size[1]}; the low-resolution "
            "stream that gives frames of size may not exceed the main stream"
        )
    return main


class PicameraReader:
    """Frames from Picamera2's main or lores stream (see the module), BGR, timed by the sensor."""

    def __init__(self, spec: SourceSpec) -> None:
        picamera2 = import_picamera2()
        self.spec = spec
        self.description = f"Pi camera {spec.location}"
        self.fps = float(spec.fps or 30.0)
        try:
            self.camera = picamera2.Picamera2(int(spec.location))
        except (IndexError, RuntimeError) as exc:  # no camera at that number; libcamera's own errors
            raise CameraError(
                f"{self.description} did not open ({exc}): rpicam-hello --list-cameras lists the cameras libcamera "
                "sees; a USB camera is opened with 0 or /dev/video0 instead"
            ) from None
        try:
            self.config, self.stream = camera_configuration(picamera2, self.camera, spec)
            self.camera.configure(self.config)
            self.camera.start()
        except RuntimeError as exc:
            self.camera.close()
            raise CameraError(f"{self.description}: Picamera2 refused the configuration: {exc}") from None
        stream = self.config[self.stream]
        self.format, self.size = stream["format"], tuple(stream["size"])
        self._flush = True
        log.info("%s: %s stream %s %dx%d", self.description, self.stream, self.format, *self.size)

    def read(self) -> tuple[np.ndarray, float] | None:
        request = self.camera.capture_request(flush=self._flush)
        self._flush = False
        try:
            image = request.make_array(self.stream)
            timestamp_ns = request.get_metadata().get("SensorTimestamp")
        finally:
            request.release()
        captured_at = timestamp_ns / 1e9 if timestamp_ns else time.monotonic()
        return to_bgr(image, self.format, self.size), captured_at

    def reopen(self) -> None:
        self._flush = True

    def close(self) -> None:
        try:
            self.camera.stop()
        finally:
            self.camera.close()


def to_bgr(image: np.ndarray, pixel_format: str, size: tuple[int, int]) -> np.ndarray:
    """A Picamera2 array in ``pixel_format`` → BGR uint8 of ``size`` (width, height)."""
    width, height = size
    if pixel_format == "RGB888":  # B, G, R in memory: OpenCV's order already
        return np.ascontiguousarray(image[:height, :width, :3])
    if pixel_format in ("XBGR8888", "XRGB8888"):  # XRGB8888 is B, G, R, X in memory; XBGR8888 is R, G, B, X
        order = cv2.COLOR_BGRA2BGR if pixel_format == "XRGB8888" else cv2.COLOR_RGBA2BGR
        return cv2.cvtColor(np.ascontiguousarray(image[:height, :width]), order)
    if pixel_format == "YUV420":  # planar I420, rows padded to the stride: convert at the stride, then crop
        return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420)[:height, :width])
    raise CameraError(f"Picamera2 format {pixel_format} is not one edgecls converts (RGB888, XRGB8888, YUV420)")
