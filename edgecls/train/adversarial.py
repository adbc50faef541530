"""``--adversarial EPS`` training: every batch is trained on its clean images and their FGSM twins.

Goodfellow et al. (2015)'s adversarial training: the loss is the mean over the
clean batch and the same batch attacked by FGSM at ``epsilon`` pixel levels
(``edgecls.evaluate.adversarial.fgsm_pixels``, the attack ``edgecls evaluate
--adversarial`` measures with), each attack computed against the weights of
that very step. The wrapper shares the model's variables, so training it
trains the model; ``fit`` wraps and unwraps it, the saved model is the plain one.

>>> trainer = AdversarialTrainer(model, epsilon=4)  # doctest: +SKIP
>>> trainer.compile(optimizer="adam", loss="sparse_categorical_crossentropy"); trainer.fit(data)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from edgecls.base.errors import ConfigError


def check_epsilon(epsilon: float) -> None:
    if not 1.0 <= epsilon <= 255.0:
        raise ConfigError(f"--adversarial EPS is in pixel levels 1..255 (images are uint8), got {epsilon:g}")


def AdversarialTrainer(model, *, epsilon: float):  # noqa: N802 - builds a class that needs keras at call time
    """A ``keras.Model`` whose ``train_step`` mixes FGSM examples of each batch into it; calls ``model``."""
    import keras
    import tensorflow as tf

    from edgecls.evaluate.adversarial import fgsm_pixels

    check_epsilon(epsilon)

    class _AdversarialTrainer(keras.Model):
        def __init__(self, inner, epsilon: float) -> None:
            super().__init__(name=f"{inner.name}_adversarial")
            self.inner, self.epsilon = inner, float(epsilon)

        def call(self, inputs, training=False):
            return self.inner(inputs, training=training)

        def adversarial_batch(self, x, y):
            return fgsm_pixels(self.inner, x, y, self.epsilon)

        def train_step(self, data):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            x = tf.concat([x, self.adversarial_batch(x, y)], axis=0)
            y = tf.concat([y, y], axis=0)
            if sample_weight is not None:
                sample_weight = tf.concat([sample_weight, sample_weight], axis=0)
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
                self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
                scaled = self.optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, self.trainable_weights)
            self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
            return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    trainer = _AdversarialTrainer(model, epsilon)
    trainer(np.zeros((1, *model.input_shape[1:]), np.float32))  # built, as BackupAndRestore wants before fit
    return trainer
