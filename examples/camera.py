"""Classify camera frames with the edgecls runtime (no TensorFlow needed).

    python examples/camera.py 0 --model model_int8.tflite                       # first USB camera, in a window
    python examples/camera.py "picam://0?size=640x480" --model m.tflite --headless   # a Pi's camera module
    python examples/camera.py "csi://0?size=1280x720&fps=30" --model m.onnx --headless  # a Jetson's CSI camera
    python examples/camera.py rtsp://cam.local/stream --model m.onnx --headless
    python examples/camera.py clip.mp4 --model m.tflite --headless --max-frames 100
    python examples/camera.py 0 --model m.tflite --headless --collect unsure/   # keep the frames it was unsure of

A source is any ``FrameSource`` URI (docs/camera.md): a camera index or /dev/videoN, rtsp:// or http://, a video
file, a folder of images, picam://, csi://, gst://<pipeline ending in appsink>, or test://. A live source is read by
a thread that keeps the newest frame, so a model slower than the camera sees fresh frames, and each frame says how
many were skipped before it. Each frame goes through ``Classifier.predict`` (the path ``edgecls bench`` times); the
label, its score and the processed frame rate are drawn on the frame, or printed one line a frame with
``--headless``. ``edgecls watch`` does the same with live stats.

``--collect DIR`` keeps the frames whose top score is under ``--below`` or whose top two scores are closer than
``--margin``, each with a JSON sidecar (``edgecls.runtime.collect``): label them and retrain with ``edgecls train``.
"""

from __future__ import annotations

import argparse
import sys

import cv2

from edgecls.runtime import Classifier, Collector, FrameSource
from edgecls.runtime.watch import annotate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="0, /dev/video0, rtsp://…, a video file, picam://0, csi://0, test://")
    parser.add_argument("--model", required=True, help=".tflite or .onnx exported by edgecls")
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: every core)")
    parser.add_argument("--headless", action="store_true", help="print one line a frame instead of showing a window")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: at the end)")
    parser.add_argument("--realtime", action="store_true", help="play a file at its own rate, as a camera would")
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
    frames = 0
    with FrameSource(arguments.source, realtime=arguments.realtime) as source:
        try:
            for frame in source:
                label, score = classifier.predict(frame.image)[0]
                frames += 1
                fps = source.stats().processed_fps
                if arguments.headless:
                    print(f"frame {frames}: {label} {score:.3f} (+{frame.dropped} skipped, {fps:.1f} fps)")
                else:
                    cv2.imshow("edgecls", annotate(frame.image.copy(), label, score, fps))
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):  # q or Esc
                        break
                if arguments.max_frames and frames >= arguments.max_frames:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            if not arguments.headless:
                cv2.destroyAllWindows()
        print(f"{frames} frames; {source.stats().line()}; {classifier!r}", file=sys.stderr)
    if collector is not None:
        print(f"collected {collector.saved} of {collector.seen} frames into {collector.folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
