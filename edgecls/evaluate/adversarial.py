"""White-box FGSM and PGD on a Keras model, and how the same images fool its exported artifacts (transfer).

Workstation only (TensorFlow). The attack works on the model's input, the
pixels 0..255 after the resize, so ``epsilon`` is in pixel levels: 8 means
every pixel moves by at most 8 of 255. The adversarial images are rounded to
uint8 — what a camera could deliver and what an artifact takes — so the
effective L∞ bound is ``floor(epsilon)``, and the Keras model and the
artifacts are scored on the very same bytes.

>>> result = evaluate_adversarial("model.keras", "digits", 8, artifacts=["model_int8.tflite"])  # doctest: +SKIP
>>> result.clean_top1, result.fgsm_top1, result.pgd_top1, result.transfer[0]["fgsm_top1"]  # doctest: +SKIP
(0.986, 0.41, 0.12, 0.45)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecls.base.errors import ConfigError, ModelError
from edgecls.evaluate import BATCH, describe_engine, model_info, predict_scores, validation_set

log = logging.getLogger(__name__)


@dataclass
class AdversarialResult:
    model: str
    data: str
    n_images: int
    epsilon: float  # pixel levels of 0..255 (L∞)
    pgd_steps: int
    pgd_step_size: float
    clean_top1: float
    fgsm_top1: float
    pgd_top1: float
    transfer: list[dict] = field(default_factory=list)  # per artifact: clean, FGSM and PGD top-1 on the same images
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def evaluate_adversarial(
    model_path: str | Path,
    data: str | None = None,
    epsilon: float = 8.0,
    *,
    artifacts: Sequence[str | Path] = (),
    pgd_steps: int = 10,
    seed: int = 0,
) -> AdversarialResult:
    """FGSM and PGD top-1 of the ``.keras`` model at ``epsilon`` (pixel levels); ``artifacts`` on those images."""
    path = Path(model_path)
    if path.suffix != ".keras":
        raise ModelError(
            f"{path}: --adversarial needs the .keras model (gradients); pass exported files with --artifacts"
        )
    if not 1.0 <= epsilon <= 255.0:
        raise ConfigError(f"--adversarial EPS is in pixel levels 1..255 (images are uint8), got {epsilon}")
    if pgd_steps < 1:
        raise ConfigError(f"--pgd-steps must be 1 or more, got {pgd_steps}")
    info = model_info(path)
    for artifact in artifacts:
        _check_same_input(info, Path(artifact))
    images, dataset = validation_set(info, data)
    from edgecls.adapters.keras_io import load_keras_model

    model = load_keras_model(path)
    step_size = 2.5 * epsilon / pgd_steps  # Madry et al.'s rule: the steps can cross the ball and back
    rng = np.random.default_rng(seed)
    fgsm, pgd = [], []
    for start in range(0, len(images), BATCH):
        pixels = images.images[start : start + BATCH]
        labels = images.labels[start : start + BATCH]
        fgsm.append(_fgsm(model, pixels, labels, epsilon))
        pgd.append(_pgd(model, pixels, labels, epsilon, pgd_steps, step_size, rng))
    fgsm_images, pgd_images = np.concatenate(fgsm), np.concatenate(pgd)

    def top1(scorer, batch: np.ndarray) -> float:
        return round(float(np.mean(predict_scores(scorer, batch).argmax(axis=1) == images.labels)), 4)

    transfer = [
        {
            "artifact": str(artifact),
            "engine": describe_engine(artifact),
            "clean_top1": top1(artifact, images.images),
            "fgsm_top1": top1(artifact, fgsm_images),
            "pgd_top1": top1(artifact, pgd_images),
        }
        for artifact in artifacts
    ]
    return AdversarialResult(
        model=str(path),
        data=dataset.name,
        n_images=len(images),
        epsilon=float(epsilon),
        pgd_steps=pgd_steps,
        pgd_step_size=round(step_size, 4),
        clean_top1=top1(model, images.images),
        fgsm_top1=top1(model, fgsm_images),
        pgd_top1=top1(model, pgd_images),
        transfer=transfer,
        seed=seed,
        notes=[
            f"L∞ ε = {epsilon:g} pixel levels of 0..255 on the model's input (after the resize); images "
            f"rounded to uint8, so the effective bound is {math.floor(epsilon)}"
        ],
    )


def _check_same_input(info, artifact: Path) -> None:
    other = model_info(artifact)
    if other.labels != info.labels or other.input_size != info.input_size or other.channel_order != info.channel_order:
        raise ModelError(
            f"{artifact}: takes {other.input_size[0]}x{other.input_size[1]} {other.channel_order} with "
            f"{len(other.labels)} labels, the Keras model {info.input_size[0]}x{info.input_size[1]} "
            f"{info.channel_order} with {len(info.labels)}; transfer needs an artifact exported from this model"
        )


def _loss_gradient(model, pixels, labels):
    import keras
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(pixels)
        probabilities = model(pixels, training=False)  # edgecls models end in a float32 softmax
        loss = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
    return tape.gradient(loss, pixels)


def _as_uint8(adversarial: np.ndarray, clean: np.ndarray, epsilon: float) -> np.ndarray:
    bound = math.floor(epsilon)  # rounding must not leave the ball
    low, high = clean.astype(np.float32) - bound, clean.astype(np.float32) + bound
    return np.clip(np.rint(adversarial), np.maximum(low, 0), np.minimum(high, 255)).astype(np.uint8)


def _fgsm(model, pixels: np.ndarray, labels: np.ndarray, epsilon: float) -> np.ndarray:
    import tensorflow as tf

    return fgsm_pixels(model, tf.constant(pixels, tf.float32), tf.constant(labels), epsilon).numpy().astype(np.uint8)


def fgsm_pixels(model, pixels, labels, epsilon: float):
    """FGSM in TensorFlow (eager or inside a ``tf.function``): float32 pixels 0..255, rounded to whole levels and
    within ``floor(epsilon)`` of ``pixels`` (what ``_as_uint8`` keeps), so training and evaluation attack alike."""
    import tensorflow as tf

    pixels = tf.cast(pixels, tf.float32)
    gradient = tf.stop_gradient(_loss_gradient(model, pixels, labels))
    bound = float(math.floor(epsilon))
    adversarial = tf.round(pixels + epsilon * tf.sign(gradient))
    low, high = tf.maximum(pixels - bound, 0.0), tf.minimum(pixels + bound, 255.0)
    return tf.clip_by_value(adversarial, low, high)


def _pgd(model, pixels, labels, epsilon: float, steps: int, step_size: float, rng: np.random.Generator) -> np.ndarray:
    import tensorflow as tf

    clean = pixels.astype(np.float32)
    start = clean + rng.uniform(-epsilon, epsilon, clean.shape).astype(np.float32)  # a random start in the ball
    adversarial = tf.constant(np.clip(start, 0, 255))
    target = tf.constant(labels)
    for _ in range(steps):
        gradient = _loss_gradient(model, adversarial, target)
        adversarial = adversarial + step_size * tf.sign(gradient)
        adversarial = tf.clip_by_value(tf.clip_by_value(adversarial, clean - epsilon, clean + epsilon), 0.0, 255.0)
    return _as_uint8(adversarial.numpy(), pixels, epsilon)
