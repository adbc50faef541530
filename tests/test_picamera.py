"""``picam://`` against a fake ``picamera2`` module that keeps Picamera2's own rules (it cannot import on x86).

The fake follows Picamera2's sources: "RGB888" arrays are B, G, R in memory, "YUV420" is planar I420 with rows of
``stride`` bytes, a lores stream may not exceed the main one and must be YUV on a Pi 4 (VC4), ``SensorTimestamp``
is CLOCK_MONOTONIC nanoseconds, and ``flush=True`` waits for a frame started after the call.
"""

from __future__ import annotations

import sys
import time
import types
from enum import Enum

import cv2
import numpy as np
import pytest
from conftest import channel_means_onnx

from edgecls.base.errors import CameraError
from edgecls.runtime import Classifier, FrameSource
from edgecls.runtime.camera.picamera import to_bgr

RED_BGR = (0, 0, 230)


class Platform(Enum):
    VC4 = 0
    PISP = 1


def scene(width: int, height: int) -> np.ndarray:
    """What the camera sees, BGR: gray, with a red patch in the middle half."""
    image = np.full((height, width, 3), 90, np.uint8)
    image[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = RED_BGR
    return image


class FakeRequest:
    def __init__(self, camera: FakePicamera2, timestamp_ns: int) -> None:
        self.camera, self.timestamp_ns = camera, timestamp_ns

    def make_array(self, name: str) -> np.ndarray:
        stream = self.camera.config[name]
        width, height = stream["size"]
        bgr = scene(width, height)
        if stream["format"] == "RGB888":
            return bgr  # Picamera2's RGB888 is B, G, R in memory
        if stream["format"] == "BGR888":
            return bgr[:, :, ::-1].copy()
        if stream["format"] == "YUV420":  # I420, each row padded to a stride of 64
            i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
            stride = -(-width // 64) * 64
            padded = np.zeros((i420.shape[0], stride), np.uint8)
            padded[:height, :width] = i420[:height]
            chroma = i420[height:].reshape(-1, width // 2)
            padded[height:].reshape(-1, stride // 2)[:, : width // 2] = chroma
            return padded
        raise AssertionError(f"the fake has no {stream['format']}")

    def get_metadata(self) -> dict:
        return {"SensorTimestamp": self.timestamp_ns, "ExposureTime": 10000, "FrameDuration": 33333}

    def release(self) -> None:
        self.camera.released += 1


class FakePicamera2:
    platform = Platform.PISP
    cameras = 1
    made: list[FakePicamera2] = []

    def __init__(self, camera_num: int = 0) -> None:
        if camera_num >= FakePicamera2.cameras:
            raise IndexError("list index out of range")
        self.camera_num, self.config, self.started, self.closed = camera_num, None, False, False
        self.flushes: list[object] = []
        self.released = 0
        FakePicamera2.made.append(self)

    def create_video_configuration(self, main=None, lores=None, buffer_count=6, controls=None) -> dict:
        main = {"format": "XBGR8888", "size": (1280, 720), **(main or {})}
        lores = None if lores is None else {"format": "YUV420", **lores}
        return {"main": main, "lores": lores, "buffer_count": buffer_count, "controls": controls or {}}

    def configure(self, config: dict) -> None:
        lores = config["lores"]
        if lores is not None:
            if lores["size"][0] > config["main"]["size"][0] or lores["size"][1] > config["main"]["size"][1]:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if type(self).platform == Platform.VC4 and lores["format"] != "YUV420":
                raise RuntimeError("lores stream must be YUV")
        self.config = config

    def start(self) -> None:
        self.started = True

    def capture_request(self, flush=None) -> FakeRequest:
        self.flushes.append(flush)
        time.sleep(1 / 100)  # a 100 fps camera
        return FakeRequest(self, time.monotonic_ns() - 2_000_000)  # captured 2 ms before it is handed over

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    module.Platform = Platform
    FakePicamera2.made, FakePicamera2.platform = [], Platform.PISP
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return module


@pytest.fixture(scope="module")
def means(tmp_path_factory) -> Classifier:
    return Classifier(channel_means_onnx(tmp_path_factory.mktemp("means") / "means.onnx"))


def _red_in_the_model_input(classifier: Classifier, image: np.ndarray) -> None:
    pixels = classifier.preprocess(image)  # what predict feeds the model: RGB, the model's order
    height, width = pixels.shape[:2]
    red, green, blue = (int(value) for value in pixels[height // 2, width // 2])
    assert red >= 200 and green <= 40 and blue <= 40, (red, green, blue)
    assert classifier.predict(image)[0][0] == "red"


def test_the_main_stream_rgb888_is_bgr_in_memory_and_stays_red(fake_picamera2, means):
    with FrameSource("picam://0?size=320x240&fps=25") as source:
        frames = [source.read(timeout=2) for _ in range(3)]
    camera = FakePicamera2.made[0]
    assert camera.config["main"] == {"format": "RGB888", "size": (320, 240)} and camera.config["lores"] is None
    assert camera.config["controls"] == {"FrameRate": 25.0} and camera.config["buffer_count"] == 4
    assert frames[0].image.shape == (240, 320, 3)
    for frame in frames:
        _red_in_the_model_input(means, frame.image)
        assert 0.0 <= time.monotonic() - frame.captured_at < 1.0  # SensorTimestamp, on the monotonic clock
    assert camera.flushes[0] is True and set(camera.flushes[1:]) == {False}  # only the first capture flushes
    assert camera.released == len(camera.flushes) and camera.closed and not camera.started  # every request returned


def test_a_pi5_takes_frames_from_an_rgb_lores_stream(fake_picamera2, means):
    with FrameSource("picam://0?size=224x224&main=1536x864") as source:
        frame = source.read(timeout=2)
    config = FakePicamera2.made[0].config
    assert config["main"]["size"] == (1536, 864) and config["lores"] == {"format": "RGB888", "size": (224, 224)}
    assert frame.image.shape == (224, 224, 3)
    _red_in_the_model_input(means, frame.image)


def test_a_pi4_takes_frames_from_a_yuv420_lores_stream_converted_to_bgr(fake_picamera2, means):
    FakePicamera2.platform = Platform.VC4
    with FrameSource("picam://0?size=200x150&main=1280x720") as source:
        frame = source.read(timeout=2)
    assert FakePicamera2.made[0].config["lores"] == {"format": "YUV420", "size": (200, 150)}
    assert frame.image.shape == (150, 200, 3)  # the stride's padding cropped
    _red_in_the_model_input(means, frame.image)
    assert np.abs(frame.image.astype(int) - scene(200, 150)).mean() < 6  # I420 subsamples colour: edges blur


def test_the_lores_stream_may_not_exceed_main_and_a_missing_camera_is_named(fake_picamera2):
    with pytest.raises(CameraError, match=r"main=320x240 is smaller than size=640x480"):
        FrameSource("picam://0?size=640x480&main=320x240")
    with pytest.raises(CameraError, match=r"Pi camera 1 did not open .*rpicam-hello --list-cameras"):
        FrameSource("picam://1")


def test_without_picamera2_the_error_is_the_apt_recipe(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 raises ImportError
    with pytest.raises(CameraError) as raised:
        FrameSource("picam://0")
    message = str(raised.value)
    assert "\n" not in message and message.startswith("picam:// needs Picamera2, which is not importable here")
    assert "sudo apt install python3-picamera2" in message and "python3 -m venv --system-site-packages" in message
    assert 'pip install "edgecls[picamera]"' in message


def test_picamera2_under_numpy_2_says_to_keep_numpy_1(monkeypatch):
    import importlib.abc
    import importlib.util

    class CompiledForNumpy1(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """A picamera2 whose import fails as apt's does under pip's NumPy 2 (simplejpeg, compiled for NumPy 1)."""

        def find_spec(self, name, path=None, target=None):
            return importlib.util.spec_from_loader(name, self) if name == "picamera2" else None

        def exec_module(self, module):
            raise ValueError("numpy.dtype size changed, may indicate binary incompatibility. Expected 96, got 88")

    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.setattr(sys, "meta_path", [CompiledForNumpy1(), *sys.meta_path])
    with pytest.raises(CameraError, match=r'does not import under NumPy .*pip install "numpy<2"'):
        FrameSource("picam://0")


def test_to_bgr_knows_picamera2s_memory_orders():
    bgr = scene(64, 48)
    rgb_in_memory = bgr[:, :, ::-1]
    assert np.array_equal(to_bgr(bgr, "RGB888", (64, 48)), bgr)
    bgrx = np.dstack([bgr, np.full((48, 64), 255, np.uint8)])  # XRGB8888: B, G, R, 255
    xbgr = np.dstack([rgb_in_memory, np.full((48, 64), 255, np.uint8)])  # XBGR8888: R, G, B, 255
    assert np.array_equal(to_bgr(bgrx, "XRGB8888", (64, 48)), bgr)
    assert np.array_equal(to_bgr(xbgr, "XBGR8888", (64, 48)), bgr)
    with pytest.raises(CameraError, match="not one edgecls converts"):
        to_bgr(bgr, "SBGGR10", (64, 48))


def test_a_camera_that_fails_midway_is_a_camera_error(fake_picamera2, monkeypatch):
    calls = []
    real = FakePicamera2.capture_request

    def failing(self, flush=None):
        calls.append(flush)
        if len(calls) > 2:
            raise RuntimeError("Camera frontend has timed out!")
        return real(self, flush)

    monkeypatch.setattr(FakePicamera2, "capture_request", failing)
    with FrameSource("picam://0", timeout_s=2) as source:
        frames = []
        with pytest.raises(CameraError, match="Pi camera 0 failed: RuntimeError: Camera frontend has timed out!"):
            while True:
                frames.append(source.read())
    assert 1 <= len(frames) <= 2 and FakePicamera2.made[0].closed


def test_closing_twice_stops_and_closes_the_camera_once(fake_picamera2, monkeypatch):
    stops = []
    monkeypatch.setattr(FakePicamera2, "stop", lambda self: stops.append(self))
    source = FrameSource("picam://0")
    assert source.read(timeout=2) is not None
    source.close()
    source.close()
    assert len(stops) == 1 and FakePicamera2.made[0].closed
