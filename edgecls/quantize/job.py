"""What a format's quantize path is handed (``QuantizeJob``) and the parts both paths share.

``edgecls.quantize.quantize`` loads the model, the calibration and the
evaluation images once, then gives each format one ``QuantizeJob``;
``tflite.quantize_tflite`` and ``onnx.quantize_onnx`` each turn theirs into a
``QuantizedArtifact``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.quantize.budget import Attempt, BudgetOutcome, run_budget
from edgecls.quantize.calibration import CalibrationSet
from edgecls.quantize.config import QuantizeConfig, QuantizedArtifact
from edgecls.runtime.metadata import ModelInfo


class Evaluation:
    """The evaluation images and the float model's predictions on them."""

    def __init__(self, images, labels: np.ndarray, name: str, *, scope: str = "", skipped: int = 0) -> None:
        self.images, self.labels, self.name = images, labels, name
        self.scope, self.skipped = scope, skipped  # as edgecls evaluate says: "whole folder", "held-out split (…)"
        self.float_predictions: np.ndarray | None = None

    @classmethod
    def load(cls, info: ModelInfo, data: str | None) -> Evaluation | None:
        """``--eval-data``'s images as ``edgecls evaluate`` scores them: a named folder whole, training data split."""
        if not data:
            return None
        from edgecls.evaluate import evaluation_images

        evaluation = evaluation_images(info, data)
        images = evaluation.images
        return cls(images, images.labels, evaluation.name, scope=evaluation.scope, skipped=len(evaluation.skipped))

    @property
    def size(self) -> int:
        return len(self.labels)

    def float_top1(self, model) -> float:
        from edgecls.evaluate import predict_scores

        self.float_predictions = predict_scores(model, self.images).argmax(axis=1)
        return float(np.mean(self.float_predictions == self.labels))

    def score(self, artifact_path: Path) -> tuple[float, float]:
        """(top-1, agreement with float) of an artifact, through the runtime's Classifier."""
        from edgecls.evaluate import predict_scores

        predictions = predict_scores(Path(artifact_path), self.images).argmax(axis=1)
        return float(np.mean(predictions == self.labels)), float(np.mean(predictions == self.float_predictions))

    def overlap(self, calibration: CalibrationSet) -> int:
        """Evaluation images whose pixels equal a calibration image's."""
        calibrated = {image.tobytes() for image in calibration.images}
        return sum(image.tobytes() in calibrated for image in self.images.images)


@dataclass(frozen=True)
class QuantizeJob:
    """One format's share of a quantize run: everything loaded once, and where to write."""

    source: Path  # the .keras (or, for ONNX, .onnx) model quantized
    keras_model: Any  # the loaded Keras model; None when the source is an .onnx
    calibration: CalibrationSet | None  # None for FP16
    info: ModelInfo  # the metadata to embed (provenance of this run included)
    evaluation: Evaluation | None  # None without --eval-data: no budget, nothing measured
    float_top1: float | None
    config: QuantizeConfig
    work: Path  # scratch folder of this format (candidates)
    final: Path  # the artifact's path, written atomically at the end
    qat: Any = None  # with --qat: the trained ``qat.QatRun``, whose model the format converts instead
    # the Keras model's ``tflite.converter_source``: its SavedModel written once for every TFLite conversion of it
    litert: Any = None

    def run_budget(self, requantizer) -> BudgetOutcome:
        """The accuracy budget loop over ``requantizer`` with this run's evaluation and limits."""
        return run_budget(
            requantizer,
            self.evaluation.score if self.evaluation else None,
            float_top1=self.float_top1,
            max_drop=self.config.max_drop,
            max_float_layers=self.config.max_float_layers,
        )

    def judge_once(self, candidate: Path) -> BudgetOutcome:
        """An FP16 model is not budgeted (nothing to keep in float); it is measured."""
        if self.evaluation is None or self.float_top1 is None:
            return BudgetOutcome(candidate, [], [], None, None, None, None, [])
        top1, agreement = self.evaluation.score(candidate)
        drop = round((self.float_top1 - top1) * 100.0, 4)
        return BudgetOutcome(
            candidate, [], [], top1, agreement, drop, None, [], [Attempt([], [], top1, agreement, drop, 0.0)]
        )

    def final_info(self, outcome: BudgetOutcome | None) -> ModelInfo:
        """The metadata of the chosen candidate: this run's provenance plus what was measured."""
        provenance: dict[str, Any] = {"float_layers": outcome.float_layers if outcome else []}
        if outcome is not None and outcome.top1 is not None and self.evaluation is not None:
            provenance.update(
                top1=round(outcome.top1, 6), top1_data=self.evaluation.name, top1_n_images=self.evaluation.size
            )
        return self.info.with_provenance(**provenance)


def artifact_record(
    written: Path,
    *,
    fmt: str,
    precision: str,
    io: str,
    scheme: str,
    fp32_size: int,
    outcome: BudgetOutcome | None,
    started: float,
    **extra: Any,
) -> QuantizedArtifact:
    """The report's entry for an artifact written to ``written``."""
    size = written.stat().st_size
    return QuantizedArtifact(
        path=str(written),
        format=fmt,
        precision=precision,
        io=io,
        scheme=scheme,
        size_bytes=size,
        fp32_size_bytes=fp32_size,
        size_ratio=round(size / fp32_size, 4) if fp32_size else 0.0,
        top1=outcome.top1 if outcome else None,
        agreement=outcome.agreement if outcome else None,
        drop=outcome.drop if outcome else None,
        within_budget=outcome.within_budget if outcome else None,
        float_layers=outcome.float_layers if outcome else [],
        float_nodes=outcome.float_nodes if outcome else [],
        worst_layers=outcome.worst_layers if outcome else [],
        attempts=outcome.attempts if outcome else [],
        seconds=round(time.time() - started, 2),
        **extra,
    )
