"""Models: the registry of named networks, where their weights start, their BatchNorm and their size.

``build_model(name, …)`` builds any registered network (``list_models()``); the networks register
themselves when this package is imported (``edgecls.models.zoo``).

>>> from edgecls.models import build_model, list_models
>>> "mobilenetv2" in list_models()
True
"""

from edgecls.models import zoo  # noqa: F401  (registers every builder)
from edgecls.models.batchnorm import BN_MOMENTUM_MAX, BN_MOMENTUM_MIN, bn_momentum_for, set_bn_momentum
from edgecls.models.normalization import (
    CAFFE_MEAN_BGR,
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    NORMALIZE_LAYER,
    PREPROCESSING,
    normalize,
    preprocessing_output,
)
from edgecls.models.registry import (
    INPUT_NAME,
    LOGITS_LAYER,
    PROBS_LAYER,
    ModelEntry,
    ModelOptions,
    build_model,
    get_entry,
    list_models,
    register,
)

__all__ = [
    "BN_MOMENTUM_MAX",
    "BN_MOMENTUM_MIN",
    "CAFFE_MEAN_BGR",
    "IMAGENET_MEAN_RGB",
    "IMAGENET_STD_RGB",
    "INPUT_NAME",
    "LOGITS_LAYER",
    "NORMALIZE_LAYER",
    "PREPROCESSING",
    "PROBS_LAYER",
    "ModelEntry",
    "ModelOptions",
    "bn_momentum_for",
    "build_model",
    "get_entry",
    "list_models",
    "normalize",
    "preprocessing_output",
    "register",
    "set_bn_momentum",
]
