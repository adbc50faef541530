"""Sources OpenCV's ``VideoCapture`` opens: V4L2 cameras, network streams (FFmpeg), video files, GStreamer pipelines.

Each reader answers the ``Reader`` protocol: ``read()`` gives the next image (BGR uint8) and the
``time.monotonic()`` it was captured at, or ``None`` at the end of a file or a GStreamer pipeline; a camera or
stream whose read fails raises ``StreamDropped`` (the frame source reconnects a network stream, and fails a
camera with a ``CameraError``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Protocol

import cv2
import numpy as np

from edgecls.base.errors import CameraError
from edgecls.runtime.camera.uri import SourceSpec

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0  # a network stream that has not opened by then is an error (FFmpeg's own timeout)
READ_TIMEOUT_S = 5.0  # a network stream silent this long counts as dropped, and is reconnected
V4L2_BUFFERS = 1  # the driver's queue: the reader thread drains it anyway; 1 keeps its frame the newest


class StreamDropped(Exception):
    """A live source's read failed: the camera or stream stopped delivering."""


class Reader(Protocol):
    """What the frame source asks of one kind of source."""

    description: str  # "V4L2 camera /dev/video0", for messages
    fps: float  # the source's nominal frame rate (0: unknown)

    def read(self) -> tuple[np.ndarray, float] | None: ...

    def reopen(self) -> None: ...

    def close(self) -> None: ...


class CaptureReader:
    """A ``cv2.VideoCapture``, opened for its kind of source with the settings that keep frames fresh.

    V4L2: a one-buffer driver queue (``CAP_PROP_BUFFERSIZE`` works there only), and the size, rate and FOURCC asked
    for. Network: FFmpeg with open and read timeouts, set when the stream is opened (the only time FFmpeg takes
    them), so a dead camera never blocks a read forever. GStreamer: OpenCV must have been built with it.
    """

    def __init__(self, spec: SourceSpec, *, open_timeout_s: float = OPEN_TIMEOUT_S) -> None:
        self.spec = spec
        self.open_timeout_s = open_timeout_s
        self.description = _describe(spec)
        if spec.kind == "gstreamer":
            check_gstreamer(spec)
        self.capture = self._open()
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)

    def _open(self) -> cv2.VideoCapture:
        spec = self.spec
        if spec.kind == "v4l2":
            capture = _open_v4l2(spec)
        elif spec.kind == "network":
            timeouts = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                int(self.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(READ_TIMEOUT_S * 1000),
            ]
            capture = cv2.VideoCapture(spec.location, cv2.CAP_FFMPEG, timeouts)
        elif spec.kind == "gstreamer":
            capture = cv2.VideoCapture(spec.location, cv2.CAP_GSTREAMER)
        else:
            capture = cv2.VideoCapture(spec.location)
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"{self.description} did not open: {_open_hint(spec, self.open_timeout_s)}")
        return capture

    def read(self) -> tuple[np.ndarray, float] | None:
        ok, image = self.capture.read()
        captured_at = time.monotonic()
        if not ok or image is None:
            if self.spec.kind == "file":
                return None
            if self.spec.kind == "gstreamer":  # OpenCV cannot tell an end of stream (num-buffers, a file) from a fault
                log.warning("%s ended (end of stream, or a fault: GST_DEBUG=2 shows GStreamer's own)", self.description)
                return None
            raise StreamDropped(f"{self.description} delivered no frame")
        return image, captured_at

    def reopen(self) -> None:
        self.capture.release()
        self.capture = self._open()

    def close(self) -> None:
        self.capture.release()


def _open_v4l2(spec: SourceSpec) -> cv2.VideoCapture:
    device: int | str = int(spec.location) if spec.location.isdigit() else spec.location
    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    capture = cv2.VideoCapture(device, api)
    if not capture.isOpened():
        return capture
    if "fourcc" in spec.options:
        capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*spec.options["fourcc"].ljust(4)[:4]))
    if spec.size is not None:
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, spec.size[0])
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, spec.size[1])
    if spec.fps is not None:
        capture.set(cv2.CAP_PROP_FPS, spec.fps)
    capture.set(cv2.CAP_PROP_BUFFERSIZE, V4L2_BUFFERS)
    if spec.size is not None:
        got = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if got != spec.size:
            log.warning("%s: asked for %dx%d, the camera gives %dx%d", spec.uri, *spec.size, *got)
    return capture


def has_gstreamer() -> bool:
    """Whether the OpenCV imported here can open GStreamer pipelines (pip's opencv-python wheels cannot)."""
    return bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER))


def check_gstreamer(spec: SourceSpec) -> None:
    """A ``CameraError`` saying which OpenCV to use when this one was built without GStreamer."""
    if has_gstreamer():
        return
    raise CameraError(
        f"{spec.uri.split('://')[0]}:// needs an OpenCV built with GStreamer, and this one ({cv2.__version__}, "
        f"{cv2.__file__}) is not: pip's opencv-python(-headless) wheels never are. On a Jetson: "
        "pip uninstall opencv-python opencv-python-headless (in a venv made with --system-site-packages, "
        "JetPack's OpenCV is then the one imported); on Debian or Pi OS: sudo apt install python3-opencv, and the "
        'same uninstall in a --system-site-packages venv (pip install "edgecls[picamera]" installs no OpenCV)'
    )


def _describe(spec: SourceSpec) -> str:
    if spec.kind == "v4l2":
        return f"camera {spec.location}" if spec.location.isdigit() else f"V4L2 camera {spec.location}"
    if spec.kind == "network":
        return f"stream {_without_password(spec.location)}"
    if spec.kind == "gstreamer":
        return f"GStreamer pipeline {spec.location!r}"
    return f"video {spec.location}"


def _without_password(url: str) -> str:
    """``rtsp://user:secret@cam/stream`` → ``rtsp://user:***@cam/stream``: messages and logs never carry it."""
    scheme, separator, rest = url.partition("://")
    credentials, at, host = rest.partition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{separator}{credentials.split(':', 1)[0]}:***@{host}"


def _open_hint(spec: SourceSpec, open_timeout_s: float) -> str:
    if spec.kind == "v4l2":
        return (
            "no such camera, or another program holds it (ls /dev/video* lists the cameras; a Pi's CSI camera "
            "module opens with picam://0, a Jetson's with csi://0)"
        )
    if spec.kind == "network":
        return (
            f"no answer within {open_timeout_s:.0f} s, or not a stream: check the URL, its user and password, "
            "and that the camera is reachable from here"
        )
    if spec.kind == "gstreamer":
        return "GStreamer could not start the pipeline (gst-launch-1.0 with the same pipeline says why)"
    return "not a video OpenCV can decode (an image folder is read as a folder; a single image is not a video)"
