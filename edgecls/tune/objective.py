"""One trial of ``edgecls tune``: ask the choices in one place, gate, then call the stages the CLI calls.

``ask`` is where a trial's choices are asked (backbone, width, input size, weights, prune ratio, precision).
``Objective`` then runs, in order: the pre-training gate (the untrained candidate timed on the target; over budget:
recorded infeasible, never trained), rung 1 (a few epochs; the successive-halving gate), and for a promoted trial
``edgecls.train.train`` → ``edgecls.prune.prune`` → ``edgecls.quantize.quantize`` (or ``edgecls.export.export`` for
FP32) with the options ``export.stage_tables`` gives, the artifact timed on the target again and scored by
``edgecls.evaluate.evaluate`` through ``edgecls.runtime`` on the held-out split. Its two objectives: that top-1
(up) and the target's p50 (down).

A promoted trial trains its full budget from the start rather than continuing rung 1: its model is then exactly
what ``edgecls train --epochs N`` makes, so the pipeline file ``--export`` writes reproduces it; the price is the
rung-1 epochs spent twice on promoted trials (a quarter of their budget by default).

>>> Objective(context)(study.ask())  # doctest: +SKIP
(0.853, 3.02)
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.tune.export import stage_tables
from edgecls.tune.gates import (
    MB,
    Device,
    constraints,
    halving_gate,
    measure_candidate,
    measure_latency,
    set_constraints,
)
from edgecls.tune.space import Choices, SearchSpace

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 32  # INT8 calibration of an untrained candidate: its latency does not depend on the ranges


def ask(trial: Any, space: SearchSpace) -> Choices:
    """The trial's choices, asked of Optuna (grid seeds and re-runs arrive as fixed parameters)."""
    from edgecls.models.pretrained import imagenet_weights_cached

    name = trial.suggest_categorical("backbone", list(space.names))
    backbone = space.backbone(name)
    size = int(trial.suggest_categorical(space.param_name(backbone, "size"), list(backbone.sizes)))
    alpha = None
    if backbone.alphas:
        alpha = float(trial.suggest_categorical(space.param_name(backbone, "alpha"), list(backbone.alphas)))
    weights = "none"
    if len(backbone.weights) > 1 and imagenet_weights_cached(name, alpha=alpha or 1.0, image_size=(size, size)):
        weights = trial.suggest_categorical(space.param_name(backbone, "weights"), list(backbone.weights))
    ratio = float(trial.suggest_categorical("ratio", list(space.ratios)))
    precision = trial.suggest_categorical("precision", list(space.precisions))
    return Choices(name, alpha, size, weights, ratio, precision)


@dataclass(frozen=True)
class TuneContext:
    """What every trial shares: the space, the data and its labels, the calibration folder, the devices, budgets."""

    space: SearchSpace
    data: str
    labels: tuple[str, ...]
    channel_order: str  # GRAY | RGB, as edgecls train chooses for the data
    calib: str | None  # INT8 calibration folder (training images only)
    devices: tuple[Device, ...]
    max_latency_ms: float
    max_size_mb: float | None
    out: Path
    seed: int = 0

    def info(self, size: int) -> Any:
        """The metadata of a candidate at ``size`` (what its file carries before it is trained)."""
        from edgecls.runtime.metadata import ModelInfo

        channels = 1 if self.channel_order == "GRAY" else 3
        return ModelInfo(self.labels, (size, size), channels, self.channel_order, provenance={"dataset": self.data})

    def calibration(self, size: int, precision: str) -> np.ndarray:
        """A few calibration images at ``size`` for an INT8 candidate (none for FP16/FP32)."""
        channels = 1 if self.channel_order == "GRAY" else 3
        if precision != "int8" or self.calib is None:
            return np.zeros((0, size, size, channels), np.uint8)
        from edgecls.data import load_images

        images, _names, _skipped = load_images(
            self.calib, image_size=(size, size), channel_order=self.channel_order, class_names=self.labels
        )
        chosen = np.random.default_rng(self.seed).permutation(len(images))[:CALIBRATION_IMAGES]
        return images.images[np.sort(chosen)]

    @property
    def lock(self) -> Path:
        return self.out / "device.lock"

    def budget_constraints(self, latency: Any, size_mb: float, *, prefix: str = "") -> dict[str, float]:
        return constraints(
            latency, size_mb=size_mb, max_latency_ms=self.max_latency_ms, max_size_mb=self.max_size_mb, prefix=prefix
        )


class Objective:
    """``objective(trial) -> (top-1, p50 ms)``; over budget before training: (0.0, the candidate's p50), infeasible."""

    def __init__(self, context: TuneContext) -> None:
        self.context = context
        # a study builds and traces model after model in one process: TensorFlow's warnings about retracing
        # tf.functions are about that, not about anything the user can change
        logging.getLogger("tensorflow").setLevel(logging.ERROR)

    def __call__(self, trial: Any) -> tuple[float, float]:
        import optuna

        context = self.context
        choices = ask(trial, context.space)
        trial.set_user_attr("choices", choices.to_dict())
        folder = context.out / "trials" / f"{trial.number:04d}"
        started = time.monotonic()
        candidate = measure_candidate(
            choices,
            info=context.info(choices.size),
            calibration=context.calibration(choices.size, choices.precision),
            devices=list(context.devices),
            measuring=context.space.measuring,
            lock=context.lock,
        )
        trial.set_user_attr(
            "pretrain",
            {**candidate.latency.to_dict(), "size_mb": candidate.size_mb, "macs": candidate.macs,
             "seconds": round(time.monotonic() - started, 2)},
        )  # fmt: skip
        pretrain = context.budget_constraints(candidate.latency, candidate.size_mb, prefix="pretrain_")
        if not set_constraints(trial, pretrain):
            trial.set_user_attr("verdict", "over budget")
            return 0.0, candidate.latency.p50_ms
        training = context.space.training
        if training.rung_epochs < training.epochs:
            started = time.monotonic()
            rung = self._train(choices, folder / "rung1", training.rung_epochs)
            shutil.rmtree(folder / "rung1", ignore_errors=True)  # a promoted trial trains again from the start
            trial.set_user_attr("rung1_top1", float(rung.val_accuracy))
            trial.set_user_attr("rung1_seconds", round(time.monotonic() - started, 2))
            try:
                halving_gate(trial, float(rung.val_accuracy), training.promote)
            except optuna.TrialPruned as stop:
                trial.set_user_attr("verdict", f"stopped at rung 1: {stop}")
                raise
        return self._finish(trial, choices, folder)

    def _finish(self, trial: Any, choices: Choices, folder: Path) -> tuple[float, float]:
        """Train the full budget, deploy, time and score the artifact; the final constraints."""
        from edgecls.evaluate import evaluate

        context = self.context
        started = time.monotonic()
        artifact, model_path = self._deploy(choices, folder)
        trained_seconds = round(time.monotonic() - started, 2)
        latency = measure_latency(artifact, list(context.devices), context.space.measuring, lock=context.lock)
        scored = evaluate(artifact, context.data)
        size_mb = artifact.stat().st_size / MB
        params, macs = _count(model_path)
        feasible = set_constraints(trial, context.budget_constraints(latency, size_mb))
        trial.set_user_attr("verdict", "trained" if feasible else "trained, then over budget")
        trial.set_user_attr("latency", latency.to_dict())
        trial.set_user_attr("size_mb", size_mb)
        trial.set_user_attr("macs", macs)
        trial.set_user_attr("params", params)
        trial.set_user_attr("artifact", str(artifact))
        trial.set_user_attr("eval", {"n_images": scored.n_images, "scope": scored.scope, "engine": scored.engine})
        trial.set_user_attr("train_seconds", trained_seconds)
        return float(scored.top1), latency.p50_ms

    def _train(self, choices: Choices, folder: Path, epochs: int) -> Any:
        from edgecls.train import TrainConfig, train

        tables = stage_tables(choices, self.context.space.training, calib=self.context.calib, epochs=epochs)
        config = _config(TrainConfig, tables["train"], data=self.context.data, seed=self.context.seed, out=str(folder))
        try:
            return train(config)
        finally:
            _clear_session()

    def _deploy(self, choices: Choices, folder: Path) -> tuple[Path, Path]:
        """train → prune → quantize (or export): the artifact and the last Keras model."""
        from edgecls.prune import PruneConfig, prune
        from edgecls.quantize import QuantizeConfig, quantize

        context = self.context
        tables = stage_tables(choices, context.space.training, calib=context.calib)
        model = Path(self._train(choices, folder / "train", context.space.training.epochs).model_path)
        fixed = {"data": context.data, "seed": context.seed}
        try:
            if "prune" in tables:
                config = _config(PruneConfig, tables["prune"], **fixed, out=str(folder / "prune" / "model.keras"))
                model = Path(prune(model, config).model_path)
            if "quantize" in tables:
                options = dict(tables["quantize"])
                (precision,) = options.pop("precisions")
                out = str(folder / "quantize" / precision)
                config = _config(QuantizeConfig, options, precision=precision, seed=context.seed, out=out)
                return Path(quantize(model, config).artifacts[0].path), model
            from edgecls.export import export

            exported = export(model, formats=tuple(tables["export"]["formats"]), out_dir=folder / "export")
            return Path(exported.artifacts[0].path), model
        finally:
            _clear_session()


def _config(cls: Any, table: dict[str, Any], **fixed: Any) -> Any:
    """A stage config from its table (lists → the tuples frozen configs hold) and the fixed fields."""
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in {**table, **fixed}.items()}
    return cls(**values)


def _count(model_path: Path) -> tuple[int, int]:
    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.models.stats import count_params_and_macs

    try:
        return count_params_and_macs(load_keras_model(model_path))
    finally:
        _clear_session()


def _clear_session() -> None:
    """Each trial builds new models in this process: let Keras forget the last ones."""
    import keras

    keras.backend.clear_session()
