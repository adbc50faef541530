"""The registered networks: edgecls' own ``cnn`` and the ``keras.applications`` backbones, built flat on our input.

Each builder registers itself (``edgecls.models.registry``) and returns a model that takes pixels
0..255, normalises them in its first layers as its ImageNet weights were trained
(``edgecls.models.normalization``) and ends in the shared head: pool → dropout → ``logits`` → ``probs``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgecls.base.errors import ConfigError, ModelError
from edgecls.models import pretrained
from edgecls.models.batchnorm import set_bn_momentum
from edgecls.models.normalization import normalize, set_torch_normalization
from edgecls.models.registry import INPUT_NAME, LOGITS_LAYER, PROBS_LAYER, ModelOptions, list_models, register

log = logging.getLogger(__name__)


def _head(features, options: ModelOptions):
    import keras

    x = keras.layers.GlobalAveragePooling2D(name="pool")(features) if len(features.shape) == 4 else features
    if options.dropout:
        x = keras.layers.Dropout(options.dropout, name="dropout")(x)
    logits = keras.layers.Dense(options.num_classes, name=LOGITS_LAYER)(x)
    # float32 softmax even under mixed precision: a float16 softmax saturates.
    probs = keras.layers.Activation("softmax", dtype="float32", name=PROBS_LAYER)(logits)
    return probs


def _input(options: ModelOptions):
    import keras

    return keras.Input(shape=(*options.image_size, options.channels), name=INPUT_NAME)


@register(
    "cnn", default_image_size=32, min_image_size=16, description="classic small CNN: 3 × (conv-BN-ReLU, pool) → dense"
)
def _small_cnn(options: ModelOptions):
    import keras
    from keras import layers

    if options.weights is not None or options.freeze_base:
        raise ConfigError(
            "cnn has no pretrained base network: --weights and --freeze-base apply to the keras.applications "
            "backbones (" + ", ".join(name for name in list_models() if name != "cnn") + ")"
        )

    inputs = _input(options)
    x = normalize(inputs, "unit")
    momentum = 0.9 if options.bn_momentum is None else options.bn_momentum
    for block, filters in enumerate((32, 64, 128), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
        # momentum 0.9: moving statistics settle within a few hundred steps on small data sets
        x = layers.BatchNormalization(momentum=momentum, name=f"bn{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(128, activation="relu", name="fc")(x)
    return keras.Model(inputs, _head(x, options), name="cnn")


def _application(name: str, builder_name: str, options: ModelOptions, *, preprocessing: str | None, **kwargs):
    """A ``keras.applications`` network built on our input, as one flat graph.

    ``input_tensor`` makes the application's layers part of this graph instead
    of one nested layer: pruning, Grad-CAM and the quantisation debugger walk
    a flat graph. ``preprocessing`` None: the application normalises itself.
    """
    import keras

    source = pretrained.resolve_weights(options.weights)
    inputs = _input(options)
    x = normalize(inputs, preprocessing) if preprocessing is not None else inputs
    application = getattr(keras.applications, builder_name)
    base = application(input_tensor=x, include_top=False, weights=None, **kwargs)
    if source == pretrained.IMAGENET:
        _load_base_weights(
            base,
            pretrained.imagenet_weights_file(
                name, alpha=options.alpha, image_size=options.image_size, channels=options.channels
            ),
        )
    elif source is not None and source.suffix != ".keras":
        _load_base_weights(base, source)
    elif source is None and options.bn_momentum is not None:
        set_bn_momentum(base, options.bn_momentum)
    if options.freeze_base:
        if source is None:
            log.warning(
                "--freeze-base without --weights freezes a randomly initialised %s base: only the head will learn", name
            )
        for layer in base.layers:
            layer.trainable = False
    model = keras.Model(inputs, _head(base.output, options), name=name)
    if isinstance(source, Path) and source.suffix == ".keras":
        pretrained.load_from_keras_model(model, base, source)
    return model


def _load_base_weights(base, path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file")
    try:
        base.load_weights(str(path), skip_mismatch=False)
    except Exception as exc:  # Keras raises ValueError or h5py errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][
            :300
        ]  # Keras lists every layer it could not fill
        raise ModelError(
            f"{path}: cannot load these weights into the {base.name} base ({first}); "
            "use the include_top=False file of the same network and --alpha"
        ) from exc


@register(
    "mobilenetv2",
    default_image_size=96,
    min_image_size=32,
    description="MobileNetV2 (keras.applications), width --alpha",
    preprocessing="tf",
    keras_module="mobilenet_v2",
    has_alpha=True,
)
def _mobilenet_v2(options: ModelOptions):
    return _application("mobilenetv2", "MobileNetV2", options, preprocessing="tf", alpha=options.alpha)


@register(
    "mobilenetv3small",
    default_image_size=96,
    min_image_size=32,
    description="MobileNetV3-Small (keras.applications), width --alpha",
    preprocessing="tf",
    keras_module="mobilenet_v3",
    has_alpha=True,
)
def _mobilenet_v3_small(options: ModelOptions):
    return _mobilenet_v3("mobilenetv3small", "MobileNetV3Small", options)


@register(
    "mobilenetv3large",
    default_image_size=96,
    min_image_size=32,
    description="MobileNetV3-Large (keras.applications), width --alpha",
    preprocessing="tf",
    keras_module="mobilenet_v3",
    has_alpha=True,
)
def _mobilenet_v3_large(options: ModelOptions):
    return _mobilenet_v3("mobilenetv3large", "MobileNetV3Large", options)


def _mobilenet_v3(name: str, builder_name: str, options: ModelOptions):
    # Keras' include_preprocessing is this same Rescaling to [-1, 1]; ours is named like every other model's.
    return _application(
        name,
        builder_name,
        options,
        preprocessing="tf",
        alpha=options.alpha,
        include_preprocessing=False,
        minimalistic=False,
    )


@register(
    "resnet50",
    default_image_size=224,
    min_image_size=32,
    description="ResNet50 (keras.applications)",
    preprocessing="caffe",
    keras_module="resnet50",
)
def _resnet50(options: ModelOptions):
    _no_alpha("resnet50", options)
    return _application("resnet50", "ResNet50", options, preprocessing="caffe")


@register(
    "efficientnetb0",
    default_image_size=224,
    min_image_size=32,
    description="EfficientNet-B0 (keras.applications)",
    preprocessing="torch",
    keras_module="efficientnet",
)
def _efficientnet_b0(options: ModelOptions):
    _no_alpha("efficientnetb0", options)
    model = _application("efficientnetb0", "EfficientNetB0", options, preprocessing=None)
    set_torch_normalization(model)
    return model


@register(
    "efficientnetv2b0",
    default_image_size=224,
    min_image_size=32,
    description="EfficientNetV2-B0 (keras.applications)",
    preprocessing="torch",
    keras_module="efficientnet_v2",
)
def _efficientnet_v2_b0(options: ModelOptions):
    _no_alpha("efficientnetv2b0", options)
    # Keras' include_preprocessing for the B variants is this same /255, ImageNet mean and std.
    return _application(
        "efficientnetv2b0", "EfficientNetV2B0", options, preprocessing="torch", include_preprocessing=False
    )


def _no_alpha(name: str, options: ModelOptions) -> None:
    if options.alpha != 1.0:
        raise ConfigError(f"{name} has no width multiplier: --alpha applies to the MobileNets, got {options.alpha}")
