"""Distillation: a teacher's softened outputs train an edge-sized student (``edgecls distill``).

``distill(DistillConfig(...))`` is the stage (``edgecls.distill.stage``); the student is
built and checked in ``edgecls.distill.student``; the Keras part, in memory, over
``keras.distillation``, is ``edgecls.train.distillation`` (pruning fine-tunes through it too).

>>> from edgecls.distill import DistillConfig, distill
>>> result = distill(DistillConfig(teacher="runs/a/model.keras", student="mobilenetv2"))  # doctest: +SKIP
"""

from edgecls.distill.config import REPORT_NAME, DistillConfig, DistillResult
from edgecls.distill.stage import distill, interrupted
from edgecls.distill.student import build_student, check_compatible, parse_feature_layers, student_info
from edgecls.train.distillation import DistillLoss, distill_model, distillation_losses, logits_model

__all__ = [
    "REPORT_NAME",
    "DistillConfig",
    "DistillLoss",
    "DistillResult",
    "build_student",
    "check_compatible",
    "distill",
    "distill_model",
    "distillation_losses",
    "interrupted",
    "logits_model",
    "parse_feature_layers",
    "student_info",
]
