"""A frame as a source hands it out, and the figures a source keeps about its frames (after Frigate's camera stats).

**Channel order, once for every source**: ``Frame.image`` is a uint8 array in OpenCV's order, BGR (height x
width x 3), or gray (height x width) where the source is gray (a gray PNG in a folder): what
``Classifier.predict`` takes, which converts to the model's own order (``ModelInfo.channel_order``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

STATS_WINDOW_S = 5.0  # capture and processed fps are rates over the last this-many seconds
AGE_SAMPLES = 1000  # frame ages and processing times: percentiles over the last this-many frames


@dataclass(frozen=True)
class Frame:
    """One frame: the image (BGR or gray uint8), its number at the source, when it was captured, what was skipped.

    ``sequence`` counts every frame the source captured, from 0, whether handed out or not: a gap is a skipped
    frame. ``captured_at`` is ``time.monotonic()`` seconds (CLOCK_MONOTONIC on Linux, the clock of Picamera2's
    ``SensorTimestamp``) when the frame was captured, or as near to it as the source tells. ``dropped`` is the
    number of frames skipped since the previous frame handed out: a reader slower than the camera gets the newest
    frame, not a queue of old ones.
    """

    image: np.ndarray
    sequence: int
    captured_at: float
    dropped: int = 0

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the frame was captured."""
        return (time.monotonic() if now is None else now) - self.captured_at


@dataclass(frozen=True)
class SourceStats:
    """What a source measured, over the last ``STATS_WINDOW_S`` seconds for rates, ``AGE_SAMPLES`` frames for times.

    - ``capture_fps``: frames the source captured per second (the camera's rate);
    - ``processed_fps``: frames handed to the caller per second;
    - ``skipped``: frames captured and never handed out, since the source opened (newer ones took their place);
    - ``inference_ms``: median time the caller spent on a frame, from handing it out to the next read: in
      ``for frame in source: classifier.predict(frame)``, the prediction;
    - ``age_p50_ms``, ``age_p95_ms``: a frame's age when the caller was done with it (at the next read), from its
      capture: how old a result is when it comes out. With a live source at most about one frame period plus one
      ``inference_ms``.
    """

    source: str
    captured: int
    processed: int
    skipped: int
    capture_fps: float
    processed_fps: float
    inference_ms: float | None
    age_p50_ms: float | None
    age_p95_ms: float | None
    reconnects: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One line for a terminal: ``capture 30.0 fps, processed 24.9 fps, skipped 31, inference 38.2 ms, ...``."""
        parts = [
            f"capture {self.capture_fps:.1f} fps",
            f"processed {self.processed_fps:.1f} fps",
            f"skipped {self.skipped}",
        ]
        if self.inference_ms is not None:
            parts.append(f"inference {self.inference_ms:.1f} ms")
        if self.age_p50_ms is not None and self.age_p95_ms is not None:
            parts.append(f"frame age p50 {self.age_p50_ms:.0f} ms p95 {self.age_p95_ms:.0f} ms")
        if self.reconnects:
            parts.append(f"reconnects {self.reconnects}")
        return ", ".join(parts)


class FrameMeter:
    """Counts and times frames as a source captures and hands them out; safe between the reader thread and the
    caller."""

    def __init__(self, source: str, *, clock: Any = time.monotonic) -> None:
        self.source = source
        self._clock = clock
        self._lock = threading.Lock()
        self._captures: deque[float] = deque()
        self._deliveries: deque[float] = deque()
        self._holds: deque[float] = deque(maxlen=AGE_SAMPLES)
        self._ages: deque[float] = deque(maxlen=AGE_SAMPLES)
        self.captured = self.processed = self.skipped = self.reconnects = 0
        self._handed_out: Frame | None = None
        self._handed_out_at = 0.0

    def captured_one(self) -> None:
        with self._lock:
            self.captured += 1
            self._captures.append(self._clock())

    def reconnected(self) -> None:
        with self._lock:
            self.reconnects += 1

    def done_with_previous(self) -> None:
        """The caller asks for a frame: the one it had is done (its hold time and final age are recorded)."""
        now = self._clock()
        with self._lock:
            if self._handed_out is not None:
                self._holds.append(now - self._handed_out_at)
                self._ages.append(now - self._handed_out.captured_at)
                self._handed_out = None

    def handed_out(self, frame: Frame) -> None:
        with self._lock:
            self.processed += 1
            self.skipped += frame.dropped
            self._handed_out, self._handed_out_at = frame, self._clock()
            self._deliveries.append(self._handed_out_at)

    def stats(self) -> SourceStats:
        now = self._clock()
        with self._lock:
            return SourceStats(
                source=self.source,
                captured=self.captured,
                processed=self.processed,
                skipped=self.skipped,
                capture_fps=round(_rate(self._captures, now), 2),
                processed_fps=round(_rate(self._deliveries, now), 2),
                inference_ms=_percentile_ms(self._holds, 50),
                age_p50_ms=_percentile_ms(self._ages, 50),
                age_p95_ms=_percentile_ms(self._ages, 95),
                reconnects=self.reconnects,
            )


def _rate(times: deque[float], now: float) -> float:
    """Events per second over the last ``STATS_WINDOW_S`` (older events are dropped from ``times``)."""
    while times and now - times[0] > STATS_WINDOW_S:
        times.popleft()
    if len(times) < 2:
        return 0.0
    return (len(times) - 1) / max(times[-1] - times[0], 1e-9)


def _percentile_ms(values: deque[float], percent: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.fromiter(values, dtype=np.float64), percent)) * 1000.0, 2)
