"""Classify camera frames with the edgecls runtime (no TensorFlow needed).

    python examples/camera.py 0 --model model_int8.tflite            # first camera, in a window
    python examples/camera.py rtsp://cam.local/stream --model m.onnx --headless
    python examples/camera.py clip.mp4 --model m.tflite --headless --max-frames 100
    python examples/camera.py 0 --model m.tflite --headless --collect unsure/   # keep the frames it was unsure of

A source is a camera index, a video file or a stream URL (anything
``cv2.VideoCapture`` opens). Each frame goes through ``Classifier.predict``
(resize, channel order, inference, top-k: the same path ``edgecls bench``
times); the label, its score and the frame rate are drawn on the frame, or
printed one line a frame with ``--headless``.

``--collect DIR`` keeps the frames whose top score is under ``--below`` or
whose top two scores are closer than ``--margin``, each with a JSON sidecar
(``edgecls.runtime.collect``): label them and retrain with ``edgecls train``.

For several cameras, give each thread its own ``Classifier`` (a shared one is
safe too: its engine calls are serialised by a lock).
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np

from edgecls.runtime import Classifier
from edgecls.runtime.collect import Collector


def open_source(source: str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not capture.isOpened():
        raise SystemExit(f"error: cannot open video source {source!r} (a camera index, a video file or a stream URL)")
    return capture


def annotate(frame: np.ndarray, label: str, score: float, fps: float) -> np.ndarray:
    """Draw ``label score`` and the frame rate in the top-left corner (in place)."""
    text = f"{label} {score:.2f}  {fps:.1f} fps"
    cv2.rectangle(frame, (0, 0), (12 + 11 * len(text), 30), (0, 0, 0), thickness=-1)
    cv2.putText(frame, text, (6, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="camera index (0), video file, or stream URL (rtsp://…)")
    parser.add_argument("--model", required=True, help=".tflite or .onnx exported by edgecls")
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: every core)")
    parser.add_argument("--headless", action="store_true", help="print one line a frame instead of showing a window")
    parser.add_argument(
        "--max-frames", type=int, default=0, help="stop after this many frames (0: until the source ends)"
    )
    parser.add_argument("--collect", metavar="DIR", default=None, help="save frames the model was unsure about here")
    parser.add_argument("--below", type=float, default=0.6, help="with --collect: keep frames scoring under this")
    parser.add_argument("--margin", type=float, default=0.1, help="with --collect: ... or whose top two are closer")
    parser.add_argument("--max-files", type=int, default=1000, help="with --collect: keep at most this many frames")
    parser.add_argument("--every", type=float, default=1.0, help="with --collect: at most one frame per this many s")
    arguments = parser.parse_args(argv)

    collector = None
    if arguments.collect:
        collector = Collector(
            arguments.collect,
            below=arguments.below,
            margin=arguments.margin,
            max_files=arguments.max_files,
            every_s=arguments.every,
        )
    classifier = Classifier(arguments.model, threads=arguments.threads, top_k=1, collect=collector)
    capture = open_source(arguments.source)
    frames, fps, last = 0, 0.0, time.perf_counter()
    try:
        while not arguments.max_frames or frames < arguments.max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            label, score = classifier.predict(frame)[0]
            now = time.perf_counter()
            fps = 0.9 * fps + 0.1 / max(now - last, 1e-9) if frames else 1.0 / max(now - last, 1e-9)  # smoothed
            last = now
            frames += 1
            if arguments.headless:
                print(f"frame {frames}: {label} {score:.3f} ({fps:.1f} fps)", flush=True)
                continue
            cv2.imshow("edgecls", annotate(frame, label, score, fps))
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):  # q or Esc
                break
    finally:
        capture.release()
        if not arguments.headless:
            cv2.destroyAllWindows()
    print(f"{frames} frames, {fps:.1f} fps, {classifier!r}", file=sys.stderr)
    if collector is not None:
        print(f"collected {collector.saved} of {collector.seen} frames into {collector.folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
