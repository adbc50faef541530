"""What runs on the device: numpy, OpenCV and one inference engine, never TensorFlow.

>>> from edgecls.runtime import Classifier  # doctest: +SKIP
>>> Classifier("model.tflite").predict(frame)  # doctest: +SKIP
"""

from edgecls.runtime.engines import Engine, list_engines, load_engine
from edgecls.runtime.metadata import ModelInfo, read_model_info
from edgecls.runtime.model import Classifier

__all__ = ["Classifier", "Engine", "ModelInfo", "list_engines", "load_engine", "read_model_info"]
