"""``FrameSource``: frames from a camera, a stream, a file or a folder, opened from one URI, never stale.

>>> with FrameSource("test://?fps=30") as source:  # doctest: +SKIP
...     for frame in source:
...         print(frame.sequence, frame.dropped, classifier.predict(frame.image))

How frames are read:

- **Live sources** (cameras, streams, GStreamer pipelines, ``test://``) are read by a thread that keeps only the
  newest frame. A caller slower than the camera gets the newest frame each time, and ``Frame.dropped`` says how
  many it missed (Ultralytics' stream loader and Frigate do the same; without it OpenCV and the driver queue
  frames, and a slow loop sees frames seconds old).
- **Files and folders** give every frame in order, as fast as the caller reads, unless ``realtime=True``: then
  they play at their own rate (a video's, or ``fps`` for a folder) as a camera would, newest frame kept.
- **Network streams** never block forever: FFmpeg's open and read timeouts are set when the stream opens, and a
  stream that drops is reopened with backoff (0.5 s, 1 s, 2 s … 30 s), logged as a warning, while ``read``
  waits; ``stats().reconnects`` counts it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from types import TracebackType

import numpy as np

from edgecls.base.errors import CameraError, FrameTimeout
from edgecls.runtime.camera.capture import CaptureReader, Reader, StreamDropped
from edgecls.runtime.camera.frames import Frame, FrameMeter, SourceStats
from edgecls.runtime.camera.uri import SourceSpec, parse_source

log = logging.getLogger(__name__)

RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.5, 30.0  # backoff between reconnect attempts: doubles up to the maximum
FOLDER_FPS = 30.0  # a folder played with realtime=True and no fps


def open_reader(spec: SourceSpec) -> Reader:
    """The reader for ``spec``'s kind (Picamera2 is imported here only, for ``picam://``)."""
    if spec.kind == "synthetic":
        from edgecls.runtime.camera.synthetic import SyntheticReader

        return SyntheticReader(spec)
    if spec.kind == "folder":
        from edgecls.runtime.camera.synthetic import FolderReader

        return FolderReader(spec)
    if spec.kind == "picamera":
        from edgecls.runtime.camera.picamera import PicameraReader

        return PicameraReader(spec)
    return CaptureReader(spec)


class FrameSource:
    """Frames from ``uri`` (see ``edgecls.runtime.camera.uri``): a context manager, an iterator, ``read``, ``stats``.

    ``realtime``: play a file or folder at its own rate, skipping frames a slow caller misses (default: every
    frame in order); ``test://`` is always played in real time. ``fps``: the rate of a folder played in real
    time, or a video's instead of its own. ``timeout_s``: how long ``read`` and the iterator wait for a frame
    before ``FrameTimeout`` (a network stream being reconnected is waited for as long as it takes).
    """

    def __init__(
        self,
        uri: str | int | os.PathLike[str],
        *,
        realtime: bool | None = None,
        fps: float | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.spec = parse_source(uri)
        self.timeout_s = timeout_s
        self.reader: Reader = open_reader(self.spec)
        self.description = self.reader.description
        self.live = self.spec.live
        paced = self.spec.kind == "synthetic" or (realtime is True and not self.live)
        self.pace_fps = (fps or self.reader.fps or FOLDER_FPS) if paced else 0.0
        self.meter = FrameMeter(self.description)
        self._condition = threading.Condition()
        self._newest: Frame | None = None
        self._ended = False
        self._failure: BaseException | None = None
        self._reconnecting = False
        self._closed = threading.Event()
        self._sequence = 0
        self._last_sequence = -1
        self._thread: threading.Thread | None = None
        if self.live or paced:
            self._thread = threading.Thread(target=self._read_newest, name="edgecls-frame-source", daemon=True)
            self._thread.start()

    # -- what callers use -------------------------------------------------------------------------------------

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame (the newest, for a live source), ``None`` once the source has ended.

        Waits at most ``timeout`` seconds (default ``timeout_s``), then raises ``FrameTimeout``.
        """
        self.meter.done_with_previous()
        if self._closed.is_set():
            return None
        if self._thread is None:
            frame = self._read_in_order()
        else:
            frame = self._take_newest(self.timeout_s if timeout is None else timeout)
        if frame is not None:
            self.meter.handed_out(frame)
        return frame

    def stats(self) -> SourceStats:
        """Capture and processed fps, skipped frames, time per frame and frame age (see ``SourceStats``)."""
        return self.meter.stats()

    def close(self) -> None:
        """Stop the reader thread and release the camera (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._condition:
            self._ended = True
            self._condition.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(self.timeout_s, 1.0))
        self.reader.close()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        while True:
            try:
                frame = self.read()
            except FrameTimeout:
                if self._reconnecting:  # a stream that dropped: wait for it while the thread reopens it
                    continue
                raise
            if frame is None:
                raise StopIteration
            return frame

    def __repr__(self) -> str:
        return f"FrameSource({self.spec.uri!r}: {self.description})"

    # -- files and folders in order, in the caller's thread ---------------------------------------------------

    def _read_in_order(self) -> Frame | None:
        read = self.reader.read()
        if read is None:
            return None
        image, captured_at = read
        self.meter.captured_one()
        frame = Frame(image, self._sequence, captured_at, 0)
        self._sequence += 1
        return frame

    # -- live and paced sources: a thread keeps the newest frame ----------------------------------------------

    def _take_newest(self, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._newest is None:
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    raise failure
                if self._ended:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    waiting = " (reconnecting)" if self._reconnecting else ""
                    raise FrameTimeout(f"{self.description}: no frame within {timeout:g} s{waiting}")
                self._condition.wait(left)
            newest, self._newest = self._newest, None
        dropped = newest.sequence - self._last_sequence - 1
        self._last_sequence = newest.sequence
        return Frame(newest.image, newest.sequence, newest.captured_at, dropped)

    def _read_newest(self) -> None:
        started = time.monotonic()
        try:
            while not self._closed.is_set():
                if self.pace_fps:  # frame n is due n / fps after the start; a slow reader does not sleep
                    due = started + self._sequence / self.pace_fps
                    if self._closed.wait(max(0.0, due - time.monotonic())):
                        break
                try:
                    read = self.reader.read()
                except StreamDropped as dropped:
                    if self.spec.kind != "network" or not self._reconnect(str(dropped)):
                        raise CameraError(f"{dropped}: the source stopped") from None
                    continue
                except CameraError:
                    raise
                except Exception as exc:  # a camera library's own error (Picamera2's RuntimeError): one line
                    raise CameraError(f"{self.description} failed: {type(exc).__name__}: {exc}") from exc
                if read is None:
                    break
                self._publish(*read)
        except BaseException as failure:  # handed to the caller's next read
            with self._condition:
                self._failure = failure
        finally:
            with self._condition:
                self._ended = True
                self._condition.notify_all()

    def _publish(self, image: np.ndarray, captured_at: float) -> None:
        frame = Frame(image, self._sequence, captured_at)
        self._sequence += 1
        self.meter.captured_one()
        with self._condition:
            self._newest = frame  # one not taken is replaced: the caller will see the gap in sequence numbers
            self._condition.notify_all()

    def _reconnect(self, reason: str) -> bool:
        """Reopen a dropped network stream, backing off between attempts; ``False`` once the source is closed."""
        self._reconnecting = True
        delay, attempt = RECONNECT_FIRST_S, 0
        try:
            while True:
                attempt += 1
                log.warning("%s; reconnecting in %.1f s (attempt %d)", reason, delay, attempt)
                if self._closed.wait(delay):
                    return False
                try:
                    self.reader.reopen()
                except CameraError as exc:
                    reason = str(exc)
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    continue
                self.meter.reconnected()
                log.warning("%s: reconnected after %d attempt%s", self.description, attempt, "s"[: attempt - 1])
                return True
        finally:
            self._reconnecting = False
