"""Evaluation: what an artifact scores and where it fails — on held-out images, under camera corruptions and
attacks, against another artifact (A/B), where it looks (Grad-CAM), and what the file itself says (``info``).

``evaluate(model_path, data=None)`` scores any ``.keras``, ``.tflite`` or ``.onnx`` the same way
(``edgecls.evaluate.scoring``); the others are ``robustness``, ``adversarial``, ``compare``, ``explain``
and ``info``.

>>> from edgecls.evaluate import evaluate
>>> evaluate("model_int8.tflite", data="photos/val").top1  # doctest: +SKIP
0.97
"""

from edgecls.evaluate.scoring import (
    BATCH,
    EvalImages,
    EvalResult,
    class_metrics,
    confusion_matrix,
    describe_engine,
    evaluate,
    evaluation_folder,
    evaluation_images,
    is_training_data,
    make_scorer,
    model_info,
    plot_confusion,
    predict_scores,
    score_result,
    top1_accuracy,
    validation_set,
)

__all__ = [
    "BATCH",
    "EvalImages",
    "EvalResult",
    "class_metrics",
    "confusion_matrix",
    "describe_engine",
    "evaluate",
    "evaluation_folder",
    "evaluation_images",
    "is_training_data",
    "make_scorer",
    "model_info",
    "plot_confusion",
    "predict_scores",
    "score_result",
    "top1_accuracy",
    "validation_set",
]
