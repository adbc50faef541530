"""``watch``: a model on a camera, frame by frame, with the source's stats: what ``edgecls watch`` runs.

>>> from edgecls.runtime.watch import WatchConfig, watch  # doctest: +SKIP
>>> report = watch(WatchConfig("model.tflite", "test://?fps=30", duration_s=3))  # doctest: +SKIP
>>> report.stats.processed_fps  # doctest: +SKIP
29.8

Each frame goes through ``Classifier.predict`` (the path ``edgecls bench`` times); ``on_frame`` gets each
``FrameResult`` as it comes, with the source for its ``stats()`` (``edgecls watch`` prints them). Ctrl-C ends
the watch as ``duration_s`` does: the report is returned, not lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgecls.base.errors import CameraError, ConfigError
from edgecls.runtime.camera import Frame, FrameSource, SourceStats
from edgecls.runtime.collect import Collector
from edgecls.runtime.model import Classifier, Prediction

log = logging.getLogger(__name__)

WINDOW = "edgecls watch"


@dataclass(frozen=True)
class WatchConfig:
    """What to watch: ``model`` on ``source`` (a ``FrameSource`` URI) for ``duration_s`` (None: until it ends)."""

    model: str
    source: str
    duration_s: float | None = None
    top_k: int = 3
    threads: int | None = None
    collect: str | None = None  # keep the frames the model was unsure of here (edgecls.runtime.collect)
    show: bool = False  # draw the frames with their top label in an OpenCV window (q or Esc stops)


@dataclass(frozen=True)
class FrameResult:
    """One frame's prediction and timing: ``age_ms`` from capture to the prediction's end."""

    sequence: int
    dropped: int
    age_ms: float
    inference_ms: float
    predictions: Prediction

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "dropped": self.dropped,
            "age_ms": round(self.age_ms, 2),
            "inference_ms": round(self.inference_ms, 2),
            "top": [{"label": label, "score": round(score, 5)} for label, score in self.predictions],
        }


@dataclass(frozen=True)
class WatchReport:
    """How a watch went: frames, seconds, why it stopped, the source's stats, the model and engine."""

    model: str
    source: str
    frames: int
    seconds: float
    stopped: str  # "duration", "source ended", "interrupted", "window closed"
    stats: SourceStats
    engine: str
    collected: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FrameCallback = Callable[[FrameResult, FrameSource], None]  # source.stats() when the callback wants the figures


def watch(config: WatchConfig, *, on_frame: FrameCallback | None = None) -> WatchReport:
    """Predict on every frame ``config.source`` hands out until the duration, the source's end or Ctrl-C."""
    if config.duration_s is not None and config.duration_s <= 0:
        raise ConfigError(f"duration must be more than 0 seconds, got {config.duration_s}")
    if config.show:
        _check_window_support()
    collector = Collector(config.collect) if config.collect else None
    classifier = Classifier(config.model, threads=config.threads, top_k=config.top_k, collect=collector)
    frames, stopped = 0, "source ended"
    started = time.monotonic()
    with FrameSource(config.source) as source:
        try:
            for frame in source:
                result = predict_frame(classifier, frame)
                frames += 1
                if on_frame is not None:
                    on_frame(result, source)
                if config.show and not _show(frame, result, source.stats().processed_fps):
                    stopped = "window closed"
                    break
                if config.duration_s is not None and time.monotonic() - started >= config.duration_s:
                    stopped = "duration"
                    break
        except KeyboardInterrupt:
            stopped = "interrupted"
        finally:
            if config.show:
                cv2.destroyAllWindows()
        stats = source.stats()
    return WatchReport(
        model=str(config.model),
        source=source.description,
        frames=frames,
        seconds=round(time.monotonic() - started, 3),
        stopped=stopped,
        stats=stats,
        engine=_describe_engine(classifier),
        collected=collector.saved if collector is not None else None,
    )


def _describe_engine(classifier: Classifier) -> str:
    engine = classifier.engine
    threads = f"{engine.threads} thread{'' if engine.threads == 1 else 's'}"
    return f"{engine.name} {engine.version} ({engine.provider}, {threads})"


def predict_frame(classifier: Classifier, frame: Frame) -> FrameResult:
    """``classifier.predict`` on one frame, timed, with the frame's age when the prediction was out."""
    started = time.monotonic()
    predictions = classifier.predict(frame.image)
    done = time.monotonic()
    return FrameResult(
        frame.sequence, frame.dropped, (done - frame.captured_at) * 1000, (done - started) * 1000, predictions
    )


def annotate(image: np.ndarray, label: str, score: float, fps: float) -> np.ndarray:
    """Draw ``label score`` and the frame rate in the top-left corner (in place); returns the image."""
    text = f"{label} {score:.2f}  {fps:.1f} fps"
    cv2.rectangle(image, (0, 0), (12 + 11 * len(text), 30), (0, 0, 0), thickness=-1)
    cv2.putText(image, text, (6, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def _show(frame: Frame, result: FrameResult, fps: float) -> bool:
    """Draw the frame in the window; ``False`` once q or Esc was pressed."""
    label, score = result.predictions[0]
    cv2.imshow(WINDOW, annotate(frame.image.copy(), label, score, fps))
    return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)


def _check_window_support() -> None:
    """``--show`` needs an OpenCV with a GUI: pip's opencv-python-headless has none."""
    try:
        cv2.namedWindow(WINDOW)
    except cv2.error:
        raise CameraError(
            "showing frames needs an OpenCV with a window system, and this one has none "
            f"({cv2.__version__}, {Path(cv2.__file__ or 'cv2').parent}): pip install opencv-python instead of "
            "opencv-python-headless, or use apt's python3-opencv in a --system-site-packages venv"
        ) from None
