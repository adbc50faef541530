"""BatchNorm for a base trained from scratch: the momentum that settles its moving statistics within the run."""

from __future__ import annotations

from edgecls.base.errors import ConfigError

# BatchNorm momentum for a base trained from scratch. keras.applications builds
# every BatchNormalization with momentum 0.999 (0.99 in EfficientNet v1, 0.9 in
# V2): made for ImageNet's ~10^5 steps. The moving statistics that inference
# uses keep momentum**steps of their initial values (mean 0, variance 1), so
# after the ~150-500 steps of a small data set they are still mostly the
# initial values and validation sits at chance while training accuracy climbs.
# Rule: momentum = clip(1 - 10 / steps, 0.9, 0.99): the initial values weigh at
# most e^-10 at the end of the run, the moving average spans the last ~10 % of
# it, and it never averages fewer than ~10 batches (cnn's 0.9).
# Measured (benchmarks/results/backbones.json: textures4 cut from shipped photos,
# 600 train / 200 val patches, img 64, batch 64, 15 epochs = 150 steps, from
# scratch, best-epoch val top-1): Keras' 0.999 -> 25.0 % (chance) for both
# mobilenetv2 α0.35 and mobilenetv3small at 99 % train accuracy; this rule
# (0.933) -> mobilenetv2 α0.35 78.0, α1.0 88.5, mobilenetv3small 76.0,
# mobilenetv3large 94.0, efficientnetb0 81.0, efficientnetv2b0 75.5, resnet50
# 93.5 (cnn 100.0).
BN_MOMENTUM_MIN = 0.9
BN_MOMENTUM_MAX = 0.99


def bn_momentum_for(steps: int) -> float:
    """The BatchNorm momentum for a from-scratch base trained for ``steps`` optimizer steps.

    >>> bn_momentum_for(150), bn_momentum_for(5000)
    (0.9333333333333333, 0.99)
    """
    if steps < 1:
        raise ConfigError(f"the number of training steps must be 1 or more, got {steps}")
    return min(BN_MOMENTUM_MAX, max(BN_MOMENTUM_MIN, 1.0 - 10.0 / steps))


def set_bn_momentum(model, momentum: float) -> int:
    """Set the momentum of every BatchNormalization in ``model``; returns how many."""
    import keras

    if not 0.0 <= momentum < 1.0:
        raise ConfigError(f"BatchNorm momentum must be in [0, 1), got {momentum}")
    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)  # read when the training step is traced, saved by get_config
            count += 1
    return count
