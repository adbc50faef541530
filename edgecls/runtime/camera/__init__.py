"""Camera sources for the runtime: one ``FrameSource`` for USB, network, Pi and Jetson cameras, files and folders.

>>> from edgecls.runtime import Classifier, FrameSource  # doctest: +SKIP
>>> classifier = Classifier("model.tflite")  # doctest: +SKIP
>>> with FrameSource("picam://0?size=640x480") as source:  # doctest: +SKIP
...     for frame in source:
...         label, score = classifier.predict(frame.image)[0]

Every frame is BGR (or gray) uint8, what ``Classifier.predict`` takes (``frames.py``). numpy and OpenCV only;
Picamera2 is imported when a ``picam://`` source opens.
"""

from edgecls.runtime.camera.frames import Frame, SourceStats
from edgecls.runtime.camera.source import FrameSource
from edgecls.runtime.camera.synthetic import synthetic_frame_number
from edgecls.runtime.camera.uri import SourceSpec, jetson_csi_pipeline, parse_source

__all__ = [
    "Frame",
    "FrameSource",
    "SourceSpec",
    "SourceStats",
    "jetson_csi_pipeline",
    "parse_source",
    "synthetic_frame_number",
]
