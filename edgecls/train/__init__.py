"""Training: the ``train`` stage, the fit loop every stage shares, and what a run is made of.

``train(TrainConfig(...))`` is ``edgecls train``: starting weights, one or two phases
(``finetune``), the chance-level watch (``watch``), more than one GPU or machine
(``distribute``), retraining a deployed model (``retrain``), FGSM training
(``adversarial``). ``fit`` (``edgecls.train.fit``) is the loop prune and distill train with too.

>>> from edgecls.train import TrainConfig, train
>>> result = train(TrainConfig(data="digits", epochs=15))  # doctest: +SKIP
"""

from edgecls.train.config import DEFAULT_FINETUNE_EPOCHS, FINETUNE_LR_FACTOR, TrainConfig
from edgecls.train.fit import FitOptions, best_epoch, fit, make_optimizer, read_history, steps_per_epoch
from edgecls.train.result import TrainResult
from edgecls.train.runs import describe_device, environment
from edgecls.train.stage import choose_weights, resolve_train_config, resume_markers, train

__all__ = [
    "DEFAULT_FINETUNE_EPOCHS",
    "FINETUNE_LR_FACTOR",
    "FitOptions",
    "TrainConfig",
    "TrainResult",
    "best_epoch",
    "choose_weights",
    "describe_device",
    "environment",
    "fit",
    "make_optimizer",
    "read_history",
    "resolve_train_config",
    "resume_markers",
    "steps_per_epoch",
    "train",
]
