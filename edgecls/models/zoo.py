"""The model registry: a name → a builder, and one factory.

Every model takes pixels 0..255 (normalisation is its first layers: what the
network's ImageNet weights were trained with, see ``PREPROCESSING``) and ends in
``Dense(name="logits")`` → ``Activation("softmax", name="probs")``, so
distillation can reach the logits and pruning knows the head.

>>> model = build_model("cnn", num_classes=10, image_size=(32, 32), channels=1)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgecls import pretrained
from edgecls.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

LOGITS_LAYER = "logits"
PROBS_LAYER = "probs"
INPUT_NAME = "pixels"


@dataclass(frozen=True)
class ModelOptions:
    num_classes: int
    image_size: tuple[int, int]
    channels: int
    alpha: float = 1.0
    weights: str | Path | None = None  # "imagenet", None, or a file: *.h5 / *.weights.h5 / an edgecls *.keras
    freeze_base: bool = False
    dropout: float = 0.2
    bn_momentum: float | None = None  # BatchNorm momentum of a base not loaded from weights; see bn_momentum_for


# What each model's first layers compute from pixels 0..255 (the modes of
# keras.applications.imagenet_utils.preprocess_input), i.e. what its ImageNet
# weights were trained with: "tf" [-1, 1]; "caffe" RGB→BGR, minus the ImageNet
# mean in BGR order; "torch" /255, minus the mean, over the standard deviation
# (per RGB channel); "unit" /255 (edgecls' own cnn, no ImageNet weights).
PREPROCESSING = ("unit", "tf", "caffe", "torch")
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)  # torch mode, fractions of 255
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # caffe mode, pixels
NORMALIZE_LAYER = "normalize"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[[ModelOptions], object]
    default_image_size: int
    min_image_size: int
    description: str
    preprocessing: str = "unit"  # one of PREPROCESSING
    keras_module: str | None = None  # its keras.applications module (preprocess_input), None for our own


_REGISTRY: dict[str, ModelEntry] = {}


def register(
    name: str,
    *,
    default_image_size: int,
    min_image_size: int,
    description: str,
    preprocessing: str = "unit",
    keras_module: str | None = None,
):
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"{name}: preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")

    def decorate(builder: Callable[[ModelOptions], object]):
        _REGISTRY[name] = ModelEntry(
            name, builder, default_image_size, min_image_size, description, preprocessing, keras_module
        )
        return builder

    return decorate


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name]


def build_model(name: str, *, num_classes: int, image_size: tuple[int, int], channels: int, **options):
    """Build a registered model; see ``list_models()`` and ``ModelOptions`` for ``options``."""
    entry = get_entry(name)
    if min(image_size) < entry.min_image_size:
        raise ConfigError(
            f"{name} needs an input of at least {entry.min_image_size}x{entry.min_image_size} pixels, "
            f"got {image_size[0]}x{image_size[1]}; raise --img-size"
        )
    return entry.builder(ModelOptions(num_classes, tuple(image_size), channels, **options))


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


def normalize(inputs, preprocessing: str):
    """The layers that turn pixels 0..255 into what ``preprocessing`` expects (see ``PREPROCESSING``).

    Each mode is one ``Rescaling`` (MUL/ADD in TFLite and ONNX); "caffe" puts
    ``keras.ops.flip`` on the channel axis in front (REVERSE_V2 in TFLite, a
    plain op the INT8 converter keeps integer; the pruner leaves it alone, as it
    does everything on the fixed input channels).
    """
    import keras

    if preprocessing == "unit":
        return keras.layers.Rescaling(1.0 / 255.0, name=NORMALIZE_LAYER)(inputs)
    if preprocessing == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=NORMALIZE_LAYER)(inputs)
    if preprocessing == "caffe":
        bgr = keras.ops.flip(inputs, axis=-1)
        return keras.layers.Rescaling(1.0, offset=[-m for m in CAFFE_MEAN_BGR], name=NORMALIZE_LAYER)(bgr)
    if preprocessing == "torch":
        scale = [1.0 / (255.0 * s) for s in IMAGENET_STD_RGB]
        offset = [-m / s for m, s in zip(IMAGENET_MEAN_RGB, IMAGENET_STD_RGB)]
        return keras.layers.Rescaling(scale, offset=offset, name=NORMALIZE_LAYER)(inputs)
    raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")


_PREPROCESSING_OPS = ("InputLayer", "Rescaling", "Normalization", "Flip")


def preprocessing_output(model):
    """The tensor after the model's leading normalisation ops (Rescaling, Normalization, channel flip).

    ``keras.Model(model.inputs, preprocessing_output(model))`` is the
    normalisation sub-graph: pixels 0..255 in, what the first convolution sees out.
    """
    tensor = None
    for operation in model.operations:
        if type(operation).__name__ not in _PREPROCESSING_OPS:
            break
        tensor = operation.output
    if tensor is None:
        raise ModelError(f"{model.name}: no input layer found")
    return tensor


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
    _set_torch_normalization(model)
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


def _set_torch_normalization(model) -> None:
    """EfficientNet (v1) always builds its own Rescaling(1/255) → Normalization stem; make it torch mode.

    Built with ``weights=None`` the Normalization is unadapted (mean 0,
    variance 1: pixels / 255). Keras' ImageNet path loads the layer's mean and
    variance from the weights file (variance there holds the standard
    deviations, tensorflow#49930) and appends Rescaling(1 / sqrt(std)):
    together (x/255 - mean) / std, which is what the weights were trained
    with. Here the Normalization computes that directly, for every source of
    weights, so the model does not change with where its weights came from.
    """
    import keras
    import numpy as np

    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            mean, variance, count = layer.get_weights()
            layer.set_weights(
                [
                    np.reshape(IMAGENET_MEAN_RGB, mean.shape).astype(mean.dtype),
                    np.reshape(np.square(IMAGENET_STD_RGB), variance.shape).astype(variance.dtype),
                    count,
                ]
            )
            layer.finalize_state()  # call() reads constants made from the weights here, not the weights
            return
    raise ModelError(f"{model.name}: no Normalization layer in the EfficientNet stem")
