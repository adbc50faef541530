"""Precise BatchNorm statistics: the population mean and variance of every BatchNorm layer, re-estimated
from a few hundred training images before each validation (pycls ``compute_precise_bn_stats``,
detectron2/fvcore ``PreciseBN``; Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021).

Inference normalises with each layer's moving mean and variance. Trained from scratch for a few
hundred steps, those moving averages describe weights of many steps ago (and, with Keras' momentum
0.999, mostly their initial values), so validation sits at chance while training accuracy climbs.
Here the current weights run forward, each BatchNorm normalising with its batch's statistics as in
training, over a fixed sample of unaugmented training images at the model's input, and every layer's
moving statistics become the pooled statistics of its input over the sample:
``mean = E[x]``, ``variance = E[x^2] - E[x]^2`` (pycls' pooling; batch variances are biased, as
Keras' own moving variance is). Dropout is off during the passes: at inference there is none, and
a dropped-then-rescaled activation has another variance (Li et al., "Understanding the Disharmony
between Dropout and Batch Normalization", 2019).

The sample is drawn once, by the run's seed, from the whole training set (in memory, or read from
the disk cache): every worker of a multi-worker run computes the same statistics from the same
images with the same (all-reduced) weights, and a resumed run the same as an uninterrupted one.
Only trainable BatchNorm layers change: a frozen pretrained base keeps its ImageNet statistics.

>>> estimator = BatchNormEstimator(model, images, batch_size=64)  # doctest: +SKIP
>>> estimator.update()  # doctest: +SKIP
52
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import numpy as np

from edgecls.data import ImageSet

log = logging.getLogger(__name__)

__all__ = [
    "PRECISE_BN_IMAGES",
    "BatchNormEstimator",
    "batchnorm_layers",
    "precise_bn_callback",
    "precise_bn_for",
    "sample_images",
]

PRECISE_BN_IMAGES = 512  # training images per estimate (all of them when there are fewer): 8 batches of 64


def precise_bn_for(requested: int | None, *, keras_base_from_scratch: bool) -> int:
    """How many images the BatchNorm statistics are re-estimated from: ``requested`` (``--precise-bn``), else
    ``PRECISE_BN_IMAGES`` for a ``keras.applications`` base trained from scratch and 0 (off) otherwise.

    Kept where it wins (issue 26, benchmarks/results/defaults_scratch.json: 25 epochs, 64 px, lr 1e-3, seed 0): a
    from-scratch MobileNetV3-Small / MobileNetV2 alpha 0.35 validated 93.0 / 86.0 % on textures4 and 87.0 / 73.3 %
    on photos10 with it, 95.5 / 86.0 and 83.0 / 66.3 % with the momentum rule alone (``bn_momentum_for``), whose
    runs also sat at chance for their first 11-14 epochs. edgecls' own ``cnn`` (momentum 0.9) did not gain: 100 %
    on textures4 either way, 92.7 / 94.0 % on photos10 (seeds 0 / 1) against 95.3 / 96.7 % without, 98.9 / 100 %
    on digits either way. A pretrained base keeps its settled ImageNet statistics.

    >>> precise_bn_for(None, keras_base_from_scratch=True), precise_bn_for(None, keras_base_from_scratch=False)
    (512, 0)
    >>> precise_bn_for(0, keras_base_from_scratch=True)
    0
    """
    if requested is not None:
        return requested
    return PRECISE_BN_IMAGES if keras_base_from_scratch else 0


def batchnorm_layers(model) -> list:
    """The model's BatchNormalization layers that training updates (trainable, no batch renormalisation)."""
    import keras

    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable and not layer.renorm
    ]


def sample_images(images: ImageSet, count: int, *, seed: int) -> np.ndarray:
    """``count`` training images (all when there are fewer), drawn by ``seed``, in a random order, as uint8
    (N, H, W, C). Shuffled: a training set is stored class by class, and a batch of one class would
    normalise the layers upstream with statistics no training batch ever had."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(images), size=min(count, len(images)), replace=False))  # sorted: cache reads
    pixels = np.asarray(images.subset(rows).images, dtype=np.uint8)
    return pixels[rng.permutation(len(pixels))]


class BatchNormEstimator:
    """Re-estimates the moving statistics of ``model``'s trainable BatchNorm layers from ``images``."""

    def __init__(self, model, images: np.ndarray, *, batch_size: int) -> None:
        import keras
        import tensorflow as tf

        self.layers = batchnorm_layers(model)
        self.images = images
        self.batch_size = max(1, int(batch_size))
        self.dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # called with one tensor: no warning
        self.extractor = keras.Model(inputs, [layer.input for layer in self.layers]) if self.layers else None
        self._moments = tf.function(self._batch_moments, reduce_retracing=True)

    def _batch_moments(self, pixels):
        import tensorflow as tf

        inputs = self.extractor(pixels, training=True)  # each BatchNorm normalises with its batch's statistics
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        moments = []
        for layer, tensor in zip(self.layers, inputs):
            axis = layer.axis % len(tensor.shape)
            axes = [index for index in range(len(tensor.shape)) if index != axis]
            mean, variance = tf.nn.moments(tf.cast(tensor, tf.float32), axes=axes)
            moments.append((mean, variance))
        return moments

    @contextlib.contextmanager
    def _no_dropout(self):
        """Dropout reads its rate when a function is traced: zero while ours is traced (and called)."""
        rates = [layer.rate for layer in self.dropouts]
        try:
            for layer in self.dropouts:
                layer.rate = 0.0
            yield
        finally:
            for layer, rate in zip(self.dropouts, rates):
                layer.rate = rate

    def statistics(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(mean, variance) of each layer's input over the images, in float64, pooled over batches."""
        import tensorflow as tf

        count = len(self.images)
        sums: list[list[np.ndarray]] | None = None
        with self._no_dropout():
            for start in range(0, count, self.batch_size):
                batch = self.images[start : start + self.batch_size]
                weight = len(batch) / count
                moments = self._moments(tf.constant(batch, dtype=tf.float32))
                terms = [
                    [weight * np.float64(m.numpy()), weight * (np.float64(v.numpy()) + np.float64(m.numpy()) ** 2)]
                    for m, v in moments
                ]
                sums = terms if sums is None else [[a + c, b + d] for (a, b), (c, d) in zip(sums, terms)]
        return [(mean, np.maximum(square - mean**2, 0.0)) for mean, square in (sums or [])]

    def update(self) -> int:
        """Replace every trainable BatchNorm layer's moving mean and variance; returns how many."""
        if self.extractor is None or len(self.images) == 0:
            return 0
        for layer, (mean, variance) in zip(self.layers, self.statistics()):
            layer.moving_mean.assign(mean.astype(np.float32))
            layer.moving_variance.assign(variance.astype(np.float32))
        return len(self.layers)


def precise_bn_callback(model, images: ImageSet, *, count: int, batch_size: int, seed: int) -> Any:
    """A Keras callback that re-estimates ``model``'s BatchNorm statistics before each validation of ``fit``
    (``on_test_begin``: Keras' fit validates through ``evaluate`` with the fit's callbacks), so the epoch is
    validated, kept as best and backed up with statistics true to its weights. ``model`` is the network
    itself, also when ``fit`` trains it through a wrapper (adversarial training)."""
    import keras

    sample = sample_images(images, count, seed=seed)

    class PreciseBatchNorm(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.estimator: BatchNormEstimator | None = None

        def on_test_begin(self, logs=None):
            if self.estimator is None:
                self.estimator = BatchNormEstimator(model, sample, batch_size=batch_size)
                log.info(
                    "precise BatchNorm: %d layers re-estimated from %d training images before each validation",
                    len(self.estimator.layers),
                    len(sample),
                )
            self.estimator.update()

    return PreciseBatchNorm()
