"""What a source URI names: the kind of source and its options, checked before anything is opened.

| URI | kind |
| --- | --- |
| ``0``, ``/dev/video0``, ``/dev/video0?size=1280x720&fps=30&fourcc=MJPG`` | ``v4l2`` (a USB or V4L2 camera) |
| ``rtsp://…``, ``rtsps://…``, ``http(s)://…``, ``rtmp://…`` | ``network`` (FFmpeg, open/read timeouts, reconnect) |
| ``clip.mp4`` (any file) | ``file`` |
| ``photos/`` (a folder) | ``folder`` (its images, sorted by path) |
| ``picam://0?size=640x480&fps=30&main=1920x1080`` | ``picamera`` (Picamera2, a Pi's CSI camera) |
| ``csi://0?size=1280x720&fps=30&flip=0`` | ``gstreamer``: the Jetson ``nvarguscamerasrc`` pipeline |
| ``gst://<pipeline ending in appsink>`` | ``gstreamer`` |
| ``test://?fps=30&size=640x480&frames=0`` | ``synthetic``: frames carrying their number |

>>> parse_source("csi://0?size=1280x720&fps=60").pipeline  # doctest: +ELLIPSIS
'nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=60/1 ! ...'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from edgecls.base.errors import CameraError, ConfigError

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
# What each kind accepts after "?" (anything else is an error that lists these).
OPTIONS = {
    "v4l2": ("size", "fps", "fourcc"),
    "picamera": ("size", "fps", "main"),
    "csi": ("size", "fps", "flip"),
    "synthetic": ("size", "fps", "frames"),
}
DEFAULT_SIZE = {"picamera": (640, 480), "csi": (1280, 720), "synthetic": (640, 480)}  # (width, height)
DEFAULT_FPS = 30.0


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source URI: ``kind`` (see the module's table) and what opening it needs."""

    uri: str  # as the user gave it
    kind: str  # v4l2 | network | file | folder | picamera | gstreamer | synthetic
    location: str = ""  # device path or index, URL, file or folder path, GStreamer pipeline, camera number
    size: tuple[int, int] | None = None  # (width, height) asked for
    fps: float | None = None  # frames per second asked for
    options: dict[str, str] = field(default_factory=dict)  # the kind's other options (fourcc, main, frames)

    @property
    def pipeline(self) -> str:
        """The GStreamer pipeline of a ``gst://`` or ``csi://`` source."""
        if self.kind != "gstreamer":
            raise ValueError(f"{self.uri} is a {self.kind} source, not a GStreamer pipeline")
        return self.location

    @property
    def live(self) -> bool:
        """A camera or stream: frames come at the device's pace, and a reader that falls behind skips some."""
        return self.kind in ("v4l2", "network", "picamera", "gstreamer")


def parse_source(uri: str | int | os.PathLike[str]) -> SourceSpec:
    """Parse ``uri`` (see the module's table); a bad one is a ``ConfigError`` that says what would be right."""
    text = os.fspath(uri) if isinstance(uri, os.PathLike) else str(uri)
    if not text.strip():
        raise ConfigError(
            "the source is empty: give a camera index (0), /dev/videoN, a URL, a file, a folder, or test://"
        )
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme == "gst":
        return _gstreamer(text)
    if scheme in ("csi", "picam", "test"):
        return _camera(text, scheme)
    if scheme in NETWORK_SCHEMES:
        return SourceSpec(text, "network", text)
    if scheme:
        raise ConfigError(
            f"unknown source scheme {scheme}:// in {text!r}; sources: 0, /dev/video0, rtsp://, http(s)://, "
            "a video file, a folder of images, picam://0, csi://0, gst://<pipeline ending in appsink>, test://"
        )
    return _local(text)


def _local(text: str) -> SourceSpec:
    """A camera index, a V4L2 device (with options), a video file or a folder of images."""
    head, _, query = text.partition("?")
    if head.isdigit() or head.startswith("/dev/video"):
        options = _options(text, query, "v4l2")
        return SourceSpec(text, "v4l2", head, _size(text, options), _fps(text, options), _rest(options))
    path = Path(text).expanduser()
    if path.is_dir():
        return SourceSpec(text, "folder", str(path))
    if path.is_file():
        return SourceSpec(text, "file", str(path))
    raise CameraError(
        f"source {text!r}: no such file or folder (a camera is 0 or /dev/video0, a stream rtsp://…, "
        "a Pi camera picam://0, a Jetson CSI camera csi://0)"
    )


def _camera(text: str, scheme: str) -> SourceSpec:
    parts = urlsplit(text)
    kind = {"picam": "picamera", "csi": "csi", "test": "synthetic"}[scheme]
    options = _options(text, parts.query, kind)
    number = (parts.netloc + parts.path).strip("/") or "0"
    if kind != "synthetic" and not number.isdigit():
        raise ConfigError(f"{text}: the camera number must be 0, 1, …, got {number!r} (e.g. {scheme}://0?size=640x480)")
    size = _size(text, options) or DEFAULT_SIZE[kind]
    fps = _fps(text, options) or DEFAULT_FPS
    if kind == "csi":
        flip = options.get("flip", "0")
        if not flip.isdigit() or int(flip) > 7:
            raise ConfigError(f"{text}: flip is nvvidconv's flip-method, 0..7, got {flip!r}")
        return SourceSpec(text, "gstreamer", jetson_csi_pipeline(int(number), size, fps, int(flip)), size, fps)
    if kind == "synthetic" and not options.get("frames", "0").isdigit():
        raise ConfigError(f"{text}: frames is a count (0: endless), got {options['frames']!r}")
    if kind == "picamera" and "main" in options:
        _parse_size(text, options["main"], "main")
    return SourceSpec(text, kind, number, size, fps, _rest(options))


def _gstreamer(text: str) -> SourceSpec:
    pipeline = text.split("://", 1)[1].strip()
    last = pipeline.rsplit("!", 1)[-1].split()
    if not last or last[0] != "appsink":
        raise ConfigError(
            f"{text}: a gst:// pipeline must end in appsink, the element OpenCV reads frames from, e.g. "
            "gst://videotestsrc ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
        )
    return SourceSpec(text, "gstreamer", pipeline)


def jetson_csi_pipeline(sensor_id: int, size: tuple[int, int], fps: float, flip: int = 0) -> str:
    """The GStreamer pipeline of a Jetson CSI camera, BGR frames into OpenCV's appsink.

    ``nvarguscamerasrc`` (JetPack's Argus camera source) gives NV12 in NVMM (GPU) memory; ``nvvidconv`` copies it
    out as BGRx and flips it (``flip``: its flip-method, 0 none, 2 rotate 180°); ``videoconvert`` drops the x. The
    appsink keeps one buffer and drops older ones, so a slow reader never gets a stale frame from the pipeline.
    """
    width, height = size
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={round(fps)}/1 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=true max-buffers=1"
    )


def _options(text: str, query: str, kind: str) -> dict[str, str]:
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(OPTIONS[kind]))
    if unknown:
        raise ConfigError(f"{text}: unknown option {unknown[0]!r}; this source takes {', '.join(OPTIONS[kind])}")
    return options


def _rest(options: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in options.items() if key not in ("size", "fps")}


def _size(text: str, options: dict[str, str]) -> tuple[int, int] | None:
    return _parse_size(text, options["size"], "size") if "size" in options else None


def _parse_size(text: str, value: str, name: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", value.strip().lower())
    if match is None or 0 in (int(match.group(1)), int(match.group(2))):
        raise ConfigError(f"{text}: {name} is WIDTHxHEIGHT in pixels, e.g. 640x480, got {value!r}")
    return int(match.group(1)), int(match.group(2))


def _fps(text: str, options: dict[str, str]) -> float | None:
    if "fps" not in options:
        return None
    try:
        fps = float(options["fps"])
    except ValueError:
        fps = 0.0
    if not 0.0 < fps <= 1000.0:
        raise ConfigError(f"{text}: fps is frames per second, more than 0, got {options['fps']!r}")
    return fps
