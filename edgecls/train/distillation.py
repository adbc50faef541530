"""Knowledge distillation in memory: ``keras.distillation`` over the logits of a teacher and a student.

Every edgecls model ends in ``Dense("logits")`` → ``softmax("probs")``; the
``Distiller`` sees logits sub-models that share the layers, so training it
trains the full student. ``LogitsDistillation`` scores the softened outputs,
``FeatureDistillation`` each matched pair of intermediate layers, and training
goes through ``edgecls.train.fit`` like every stage. It lives beside ``fit``
because two stages train through it: ``edgecls.distill`` (the stage around it:
files, checks, baseline, report) and ``edgecls.prune``, whose fine-tuning learns
from the unpruned model.

>>> loss = DistillLoss(temperature=2.0)  # doctest: +SKIP
>>> history = distill_model(teacher, student, dataset, FitOptions(epochs=5), loss=loss)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.base.errors import ModelError
from edgecls.train.fit import FitOptions


@dataclass(frozen=True)
class DistillLoss:
    """The distillation loss: ``(1 - kd_weight) · CE + kd_weight · [T² · KL + Σ MSE(feature pairs)]``."""

    temperature: float = 4.0
    kd_weight: float = 0.9  # weight of the distillation term; the label loss gets 1 - kd_weight
    feature_layers: tuple[tuple[str, str], ...] = ()  # (teacher layer, student layer) pairs, outputs of equal shape


def distill_model(
    teacher: Any,
    student: Any,
    dataset: Any,
    options: FitOptions,
    *,
    loss: DistillLoss = DistillLoss(),
    run_dir: str | Path | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, list[float]]:
    """Train ``student`` (in place) against the frozen ``teacher``; return the history.

    Both are full edgecls models (softmax output); the ``Distiller`` works on
    their logits. The teacher runs in inference mode (``training=False``:
    BatchNorm statistics stay) and is not trainable, so it is never updated.
    """
    import keras

    # Through the package (not edgecls.train.fit's module): the one fit every stage shares, as a test or a
    # caller that wraps ``edgecls.train.fit`` sees it.
    from edgecls.train import fit, make_optimizer, steps_per_epoch

    losses = distillation_losses(loss.temperature, loss.feature_layers)
    distiller = keras.distillation.Distiller(
        teacher=logits_model(teacher, "teacher"),
        student=logits_model(student, "student"),
        distillation_losses=losses,
        distillation_loss_weights=[1.0] * len(losses),
        student_loss_weight=1.0 - loss.kd_weight,
    )
    # BackupAndRestore (resume) needs a built model; a subclassed Distiller is built by a first call.
    distiller(np.zeros((1, *student.input_shape[1:]), dtype=np.float32), training=False)
    distiller.compile(
        optimizer=make_optimizer(options.learning_rate, steps_per_epoch(dataset, options.batch_size) * options.epochs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return fit(distiller, dataset, options=options, run_dir=run_dir, callbacks=callbacks, compile=False)


def distillation_losses(temperature: float, feature_layers: Sequence[tuple[str, str]] = ()) -> list[Any]:
    """``LogitsDistillation`` (T²-scaled KL of the softened outputs), then one ``FeatureDistillation`` (MSE) per
    layer pair."""
    import keras

    # A KLDivergence *instance*, not the default string "kl_divergence": in
    # Keras 3.15.1 LogitsDistillation applies the softmax and the T² factor only
    # when its loss is a KLDivergence instance; the string resolves to a plain
    # function, and the KL would be taken of raw logits (a test pins this).
    losses: list[Any] = [
        keras.distillation.LogitsDistillation(temperature=temperature, loss=keras.losses.KLDivergence())
    ]
    losses += [
        keras.distillation.FeatureDistillation(loss="mse", teacher_layer_name=t, student_layer_name=s)
        for t, s in feature_layers
    ]
    return losses


def logits_model(model: Any, role: str = "model") -> Any:
    """A model from ``model``'s input to its logits, sharing its layers and weights.

    The logits are the ``logits`` layer's output (edgecls models), else the
    input of a final softmax activation. Cast to float32 so a mixed-precision
    teacher and a float32 student compare.
    """
    import keras

    from edgecls.models import LOGITS_LAYER

    try:
        logits = model.get_layer(LOGITS_LAYER).output
    except ValueError:
        last = model.layers[-1]
        if not (isinstance(last, keras.layers.Activation) and getattr(last.activation, "__name__", "") == "softmax"):
            raise ModelError(
                f"the {role} ({model.name}) has no layer named {LOGITS_LAYER!r} and does not end in a softmax "
                "activation; distillation needs the logits: build it with edgecls (every registry model ends in Dense "
                "'logits' → softmax 'probs')"
            ) from None
        logits = last.input
    if logits.dtype != "float32":
        logits = keras.layers.Activation("linear", dtype="float32", name=f"{role}_logits_float32")(logits)
    return keras.Model(model.inputs, logits, name=f"{model.name}_logits")
