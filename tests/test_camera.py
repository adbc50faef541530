"""FrameSource: URIs, the newest-frame thread and pacing, files in order, OpenCV's capture settings, reconnecting.

Real sources where this machine has them (``test://``, folders, an MJPG ``.avi`` written by OpenCV); a fake
``cv2.VideoCapture`` for what needs a camera or a stream (buffers, timeouts, reconnecting). Picamera2 and the
real GStreamer pipeline have files of their own (test_picamera.py, test_install.py).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_png

from edgecls.base.errors import CameraError, ConfigError, FrameTimeout
from edgecls.runtime.camera import FrameSource, jetson_csi_pipeline, parse_source, synthetic_frame_number
from edgecls.runtime.camera import capture as capture_module
from edgecls.runtime.camera import source as source_module

# --- URIs ---------------------------------------------------------------------------------------------------


def test_every_kind_of_uri(tmp_path):
    video = tmp_path / "clip.avi"
    video.write_bytes(b"")
    cases = {
        "0": ("v4l2", "0"),
        "/dev/video2?size=1280x720&fps=15&fourcc=MJPG": ("v4l2", "/dev/video2"),
        "rtsp://user:pw@cam.local:554/stream1": ("network", "rtsp://user:pw@cam.local:554/stream1"),
        "http://cam.local/mjpg": ("network", "http://cam.local/mjpg"),
        str(video): ("file", str(video)),
        str(tmp_path): ("folder", str(tmp_path)),
        "picam://0?size=640x480": ("picamera", "0"),
        "gst://videotestsrc ! appsink": ("gstreamer", "videotestsrc ! appsink"),
        "test://?fps=60&size=320x240&frames=5": ("synthetic", "0"),
    }
    for uri, (kind, location) in cases.items():
        spec = parse_source(uri)
        assert (spec.kind, spec.location) == (kind, location), uri
    v4l2 = parse_source("/dev/video2?size=1280x720&fps=15&fourcc=MJPG")
    assert (v4l2.size, v4l2.fps, v4l2.options, v4l2.live) == ((1280, 720), 15.0, {"fourcc": "MJPG"}, True)
    test = parse_source("test://?fps=60&size=320x240&frames=5")
    assert (test.size, test.fps, test.options, test.live) == ((320, 240), 60.0, {"frames": "5"}, False)
    assert parse_source(0).kind == "v4l2" and parse_source(tmp_path).kind == "folder"
    assert parse_source("picam://1").size == (640, 480) and parse_source("picam://1").fps == 30.0


def test_the_jetson_csi_pipeline_is_exactly_nvargus_to_appsink():
    spec = parse_source("csi://0?size=1280x720&fps=30&flip=0")
    assert spec.kind == "gstreamer" and spec.live
    assert spec.pipeline == (
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! "
        "nvvidconv flip-method=0 ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=true max-buffers=1"
    )
    assert parse_source("csi://1?size=640x480&fps=60&flip=2").pipeline == jetson_csi_pipeline(1, (640, 480), 60, 2)
    assert "sensor-id=1 " in jetson_csi_pipeline(1, (640, 480), 60, 2) and "flip-method=2 " in jetson_csi_pipeline(
        1, (640, 480), 60, 2
    )


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://cam/x", "unknown source scheme ftp://"),
        ("test://?size=640", "size is WIDTHxHEIGHT"),
        ("test://?fps=0", "fps is frames per second"),
        ("picam://0?zoom=2", "unknown option 'zoom'; this source takes size, fps, main"),
        ("csi://0?flip=9", "flip is nvvidconv's flip-method, 0..7"),
        ("picam://front", "the camera number must be 0, 1"),
        ("gst://videotestsrc ! autovideosink", "must end in appsink"),
        ("", "the source is empty"),
    ],
)
def test_a_bad_uri_says_what_is_expected(uri, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_source(uri)


def test_a_missing_file_is_a_camera_error_with_the_other_sources_named(tmp_path):
    with pytest.raises(CameraError, match=r"no such file or folder \(a camera is 0 or /dev/video0"):
        FrameSource(tmp_path / "missing.mp4")


# --- test:// through the thread -----------------------------------------------------------------------------


def test_a_test_source_is_paced_at_its_fps_and_numbered():
    with FrameSource("test://?fps=50&size=160x120&frames=25") as source:
        started = time.monotonic()
        frames = list(source)
        elapsed = time.monotonic() - started
    numbers = [frame.sequence for frame in frames]
    assert [synthetic_frame_number(frame.image) for frame in frames] == numbers and numbers[-1] == 24
    # A reader that does nothing else keeps up (on a loaded machine the scheduler may still cost it one or two).
    assert len(frames) >= 22 and all(frame.image.shape == (120, 160, 3) for frame in frames)
    assert 0.40 <= elapsed <= 1.5  # 25 frames at 50 fps: 0.48 s from the first to the last
    stats = source.stats()
    assert (stats.captured, stats.processed, stats.skipped) == (25, len(frames), 25 - len(frames))
    assert stats.capture_fps == pytest.approx(50, rel=0.15)


def test_a_slow_reader_gets_the_newest_frame_and_the_drops_are_counted():
    period, work = 1 / 40, 0.1  # a 40 fps source, 100 ms of work per frame: about 3 of 4 frames are skipped
    with FrameSource("test://?fps=40&size=160x120&frames=60") as source:
        frames = []
        for frame in source:
            frames.append((frame, frame.age_s()))  # age when handed out
            time.sleep(work)
        stats = source.stats()
    numbers = [frame.sequence for frame, _ in frames]
    assert numbers == sorted(numbers) and len(frames) < 30
    assert [synthetic_frame_number(frame.image) for frame, _ in frames] == numbers
    for previous, (frame, _) in zip(frames, frames[1:]):
        assert frame.dropped == frame.sequence - previous[0].sequence - 1  # drops since the last one handed out
    assert sum(frame.dropped for frame, _ in frames) + len(frames) == frames[-1][0].sequence + 1
    assert numbers[-1] >= 57  # the stream's end is reached: the last frames are the newest, not a backlog
    assert np.mean([frame.dropped for frame, _ in frames[1:]]) >= 2.0  # 100 ms per frame at 40 fps: 3 on average
    ages = [age for _, age in frames[1:]]
    assert max(ages) <= period + 0.05  # handed out at most one frame period (plus scheduling) after capture
    assert stats.skipped == sum(frame.dropped for frame, _ in frames) and stats.captured == 60
    assert stats.inference_ms == pytest.approx(work * 1000, rel=0.5)
    # a frame is done at the next read: its age then is at most one period plus the caller's work on it
    assert stats.age_p50_ms is not None and stats.age_p50_ms <= (period + work) * 1000 + 50


def test_read_waits_at_most_its_timeout_and_a_closed_source_ends():
    source = FrameSource("test://?fps=2&size=64x48")
    assert source.read(timeout=2.0).sequence == 0
    started = time.monotonic()
    with pytest.raises(FrameTimeout, match=r"no frame within 0.05 s"):
        source.read(timeout=0.05)
    assert time.monotonic() - started < 0.5
    source.close()
    assert source.read(timeout=0.5) is None and list(source) == []
    source.close()  # twice is fine


# --- files and folders: every frame in order, unless realtime -----------------------------------------------


@pytest.fixture
def mjpg_video(tmp_path) -> Path:
    """45 frames of 64x48, MJPG in an .avi written by OpenCV at 30 fps; frame i is uniformly gray 5 * i."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (64, 48))
    assert writer.isOpened()
    for i in range(45):
        writer.write(np.full((48, 64, 3), 5 * i, np.uint8))
    writer.release()
    return path


def _gray_number(image: np.ndarray) -> int:
    return round(float(image.mean()) / 5)  # JPEG keeps a flat gray within a level or two


def test_a_video_file_gives_every_frame_in_order(mjpg_video):
    with FrameSource(mjpg_video) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            time.sleep(0.002)  # a slow reader misses nothing in a file
    assert [_gray_number(frame.image) for frame in frames] == list(range(45))
    assert [frame.sequence for frame in frames] == list(range(45)) and not any(frame.dropped for frame in frames)
    assert source.stats().skipped == 0 and source.reader.fps == pytest.approx(30)


def test_a_video_file_in_realtime_plays_at_its_rate_and_skips_for_a_slow_reader(mjpg_video):
    with FrameSource(mjpg_video, realtime=True) as source:
        started = time.monotonic()
        frames = []
        for frame in source:
            frames.append(frame)
            time.sleep(0.08)  # 80 ms a frame against 33 ms between frames
        elapsed = time.monotonic() - started
    assert 1.3 <= elapsed <= 2.5  # 45 frames at 30 fps
    assert [_gray_number(frame.image) for frame in frames] == [frame.sequence for frame in frames]  # the newest
    assert len(frames) <= 25 and sum(frame.dropped for frame in frames) + len(frames) == frames[-1].sequence + 1
    assert source.stats().skipped >= 20


def test_a_folder_gives_its_images_in_path_order_and_skips_broken_ones(tmp_path, caplog):
    for i in range(6):
        write_png(
            tmp_path / "photos" / ("b" if i % 2 else "a") / f"{i:02d}.png", np.full((20, 30, 3), 40 * i, np.uint8)
        )
    (tmp_path / "photos" / "a" / "99.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING), FrameSource(tmp_path / "photos") as source:
        values = [int(frame.image[0, 0, 0]) for frame in source]
    assert values == [0, 80, 160, 40, 120, 200]  # a/00, a/02, a/04, b/01, b/03, b/05
    assert "99.png: not an image OpenCV decodes, skipped" in caplog.text
    assert source.reader.skipped_files == [tmp_path / "photos" / "a" / "99.png"]


def test_a_folder_in_realtime_is_paced_at_fps(tmp_path):
    for i in range(10):
        write_png(tmp_path / f"{i}.png", np.full((8, 8, 3), i, np.uint8))
    with FrameSource(tmp_path, realtime=True, fps=20) as source:
        started = time.monotonic()
        values = [int(frame.image[0, 0, 0]) for frame in source]
        elapsed = time.monotonic() - started
    assert values == list(range(10)) and 0.4 <= elapsed <= 1.2  # 10 images at 20 fps, a fast reader
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match="holds no images"):
        FrameSource(tmp_path / "empty", realtime=True)


# --- a fake cv2.VideoCapture: what OpenCV is asked, and what a dropping stream does -------------------------


class FakeCapture:
    """Records how it was opened and set; ``script`` says what each read gives: a frame, ``"fail"`` or a delay."""

    instances: list[FakeCapture] = []
    opens: list[bool] = []  # whether each new capture opens (popped from the front; empty: it opens)
    script: list[object] = []  # shared by every capture: the stream as a whole

    def __init__(self, location, api=None, params=None):
        self.location, self.api, self.params = location, api, params
        self.set_calls: dict[int, float] = {}
        self.opened = FakeCapture.opens.pop(0) if FakeCapture.opens else True
        self.released = False
        self.opened_at = time.monotonic()
        FakeCapture.instances.append(self)

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.opened

    def set(self, prop, value):
        self.set_calls[prop] = value
        return True

    def get(self, prop):
        if prop == cv2.CAP_PROP_FPS:
            return 25.0
        return {cv2.CAP_PROP_FRAME_WIDTH: 640.0, cv2.CAP_PROP_FRAME_HEIGHT: 480.0}.get(prop, 0.0)

    def read(self):
        step = FakeCapture.script.pop(0) if FakeCapture.script else "fail"
        if isinstance(step, float):
            time.sleep(step)
            step = 0
        if step == "fail":
            time.sleep(0.005)
            return False, None
        return True, np.full((4, 4, 3), step, np.uint8)

    def release(self):
        self.released = True


@pytest.fixture
def fake_capture(monkeypatch):
    FakeCapture.instances, FakeCapture.opens, FakeCapture.script = [], [], []
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    monkeypatch.setattr(source_module, "RECONNECT_FIRST_S", 0.05)
    return FakeCapture


def test_a_v4l2_camera_opens_with_one_buffer_and_the_size_rate_and_fourcc_asked(fake_capture):
    fake_capture.script = [1, 2, 3]
    with FrameSource("/dev/video0?size=640x480&fps=30&fourcc=MJPG") as source:
        assert int(source.read(timeout=2).image[0, 0, 0]) in (1, 2, 3)
    opened = fake_capture.instances[0]
    assert (opened.location, opened.api) == ("/dev/video0", cv2.CAP_V4L2)
    assert opened.set_calls[cv2.CAP_PROP_BUFFERSIZE] == 1
    assert opened.set_calls[cv2.CAP_PROP_FRAME_WIDTH] == 640 and opened.set_calls[cv2.CAP_PROP_FRAME_HEIGHT] == 480
    assert opened.set_calls[cv2.CAP_PROP_FPS] == 30 and opened.set_calls[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter.fourcc(
        *"MJPG"
    )
    assert opened.released  # closed with the source
    with FrameSource(0) as source:
        pass
    assert fake_capture.instances[-1].location == 0 and fake_capture.instances[-1].api == cv2.CAP_V4L2


def test_a_camera_that_does_not_open_says_how_to_find_one(fake_capture):
    fake_capture.opens = [False]
    with pytest.raises(CameraError, match=r"camera 0 did not open: .*ls /dev/video\* lists the cameras.*picam://0"):
        FrameSource(0)
    assert fake_capture.instances[0].released


def test_a_network_stream_opens_with_ffmpeg_timeouts_and_hides_its_password(fake_capture):
    fake_capture.script = [7] * 5
    with FrameSource("rtsp://admin:secret@cam.local/stream") as source:
        assert source.read(timeout=2) is not None
        assert "secret" not in source.description and "admin:***@cam.local" in source.description
    opened = fake_capture.instances[0]
    assert opened.api == cv2.CAP_FFMPEG
    assert opened.params == [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(capture_module.OPEN_TIMEOUT_S * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(capture_module.READ_TIMEOUT_S * 1000),
    ]
    assert cv2.CAP_PROP_BUFFERSIZE not in opened.set_calls  # V4L2's only


def test_a_dropped_stream_reconnects_with_backoff_and_says_so(fake_capture, caplog):
    # 3 frames, then the stream drops; the first two reopenings fail, the third gets 3 more frames.
    fake_capture.script = [10, 11, 12, "fail", 20, 21, 22]
    fake_capture.opens = [True, False, False, True]
    seen = []
    with caplog.at_level(logging.WARNING), FrameSource("rtsp://cam.local/stream", timeout_s=0.2) as source:
        for frame in source:  # the iterator waits through the reconnect (longer than timeout_s)
            seen.append((int(frame.image[0, 0, 0]), frame.sequence))
            time.sleep(0.03)  # slower than the fake stream: a few are skipped, the newest is given
            if seen[-1][0] == 22:
                break
        stats = source.stats()
    assert seen[-1] == (22, 5) and seen[0][0] in (10, 11, 12)  # numbering goes on across the reconnect
    assert stats.reconnects == 1 and stats.captured == 6
    opens = [capture.opened_at for capture in fake_capture.instances]
    gaps = [later - earlier for earlier, later in zip(opens[1:], opens[2:])]
    assert len(opens) == 4 and gaps[1] >= 1.8 * gaps[0] * 0.9  # the wait doubles: 0.05 s, 0.1 s, 0.2 s
    messages = [record.getMessage() for record in caplog.records]
    assert any("delivered no frame; reconnecting in 0.1 s (attempt 1)" in message for message in messages)
    assert any("did not open" in message and "reconnecting in 0.1 s (attempt 2)" in message for message in messages)
    assert any(message.endswith("reconnected after 3 attempts") for message in messages)


def test_a_silent_camera_times_out_and_a_failed_one_ends_with_an_error(fake_capture):
    fake_capture.script = [1.5]  # the first read takes 1.5 s
    with FrameSource(0, timeout_s=0.2) as source:
        started = time.monotonic()
        with pytest.raises(FrameTimeout, match="camera 0: no frame within 0.2 s"):
            next(source)
        assert time.monotonic() - started < 1.0
    fake_capture.script = [5, "fail"]
    with FrameSource(0, timeout_s=2) as source:
        assert int(source.read().image[0, 0, 0]) == 5
        with pytest.raises(CameraError, match="camera 0 delivered no frame: the source stopped"):
            source.read()


def test_a_gstreamer_source_on_an_opencv_without_gstreamer_says_what_to_uninstall(monkeypatch):
    monkeypatch.setattr(capture_module, "has_gstreamer", lambda: False)
    for uri in ("csi://0", "gst://videotestsrc ! appsink"):
        with pytest.raises(CameraError) as raised:
            FrameSource(uri)
        message = str(raised.value)
        assert "\n" not in message and "needs an OpenCV built with GStreamer" in message
        assert "On a Jetson: pip uninstall opencv-python opencv-python-headless" in message
        assert "--system-site-packages" in message and "sudo apt install python3-opencv" in message


def test_closing_stops_the_reader_thread():
    before = {thread.ident for thread in threading.enumerate()}
    source = FrameSource("test://?fps=100&size=32x32")
    assert source.read(timeout=2) is not None
    source.close()
    assert {thread.ident for thread in threading.enumerate() if thread.name == "edgecls-frame-source"} - before == set()
