"""What runs on the device: numpy, OpenCV and one inference engine, never TensorFlow.

>>> from edgecls.runtime import Classifier, FrameSource  # doctest: +SKIP
>>> classifier = Classifier("model.tflite")  # doctest: +SKIP
>>> with FrameSource(0) as camera:  # doctest: +SKIP
...     for frame in camera:
...         print(classifier.predict(frame.image))
"""

from edgecls.runtime.camera import Frame, FrameSource, SourceStats
from edgecls.runtime.collect import Collector
from edgecls.runtime.engines import Engine, list_engines, load_engine
from edgecls.runtime.metadata import ModelInfo, read_model_info
from edgecls.runtime.model import Classifier
from edgecls.runtime.watch import FrameResult, WatchConfig, WatchReport, watch

__all__ = [
    "Classifier",
    "Collector",
    "Engine",
    "Frame",
    "FrameResult",
    "FrameSource",
    "ModelInfo",
    "SourceStats",
    "WatchConfig",
    "WatchReport",
    "list_engines",
    "load_engine",
    "read_model_info",
    "watch",
]
