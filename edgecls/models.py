"""The model registry: a name → a builder, and one factory.

Every model takes pixels 0..255 (normalisation is its first layer) and ends in
``Dense(name="logits")`` → ``Activation("softmax", name="probs")``, so
distillation can reach the logits and pruning knows the head.

>>> model = build_model("cnn", num_classes=10, image_size=(32, 32), channels=1)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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
    weights: Path | None = None  # a local weights file for the base network
    freeze_base: bool = False
    dropout: float = 0.2


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[[ModelOptions], object]
    default_image_size: int
    min_image_size: int
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, *, default_image_size: int, min_image_size: int, description: str):
    def decorate(builder: Callable[[ModelOptions], object]):
        _REGISTRY[name] = ModelEntry(name, builder, default_image_size, min_image_size, description)
        return builder

    return decorate


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name]


def build_model(name: str, *, num_classes: int, image_size: tuple[int, int], channels: int, **options):
    """Build a registered model; see ``list_models()``."""
    entry = get_entry(name)
    if min(image_size) < entry.min_image_size:
        raise ConfigError(f"{name} needs an input of at least {entry.min_image_size}x{entry.min_image_size} pixels, got {image_size[0]}x{image_size[1]}; raise --img-size")
    return entry.builder(ModelOptions(num_classes, tuple(image_size), channels, **options))


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


@register("cnn", default_image_size=32, min_image_size=16, description="classic small CNN: 3 × (conv-BN-ReLU, pool) → dense")
def _small_cnn(options: ModelOptions):
    import keras
    from keras import layers

    if options.weights is not None or options.freeze_base:
        raise ConfigError("cnn has no pretrained base network: --weights and --freeze-base apply to mobilenetv2, mobilenetv3small and resnet50")

    inputs = _input(options)
    x = layers.Rescaling(1.0 / 255.0, name="normalize")(inputs)
    for block, filters in enumerate((32, 64, 128), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
        # momentum 0.9: moving statistics settle within a few hundred steps on small data sets
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(128, activation="relu", name="fc")(x)
    return keras.Model(inputs, _head(x, options), name="cnn")


def _application(builder_name: str, options: ModelOptions, normalize, **kwargs):
    """A ``keras.applications`` network built on our input, as one flat graph.

    ``input_tensor`` makes the application's layers part of this graph instead
    of one nested layer: pruning, Grad-CAM and the quantisation debugger walk
    a flat graph.
    """
    import keras

    inputs = _input(options)
    x = normalize(inputs) if normalize is not None else inputs
    application = getattr(keras.applications, builder_name)
    base = application(input_tensor=x, include_top=False, weights=None, **kwargs)
    if options.weights is not None:
        _load_base_weights(base, Path(options.weights))
    if options.freeze_base:
        if options.weights is None:
            log.warning("--freeze-base without --weights freezes a randomly initialised %s base: only the head will learn", builder_name)
        for layer in base.layers:
            layer.trainable = False
    return keras.Model(inputs, _head(base.output, options), name=builder_name.lower())


def _load_base_weights(base, path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file")
    try:
        base.load_weights(str(path), skip_mismatch=False)
    except Exception as exc:  # Keras raises ValueError or h5py errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]  # Keras lists every layer it could not fill
        raise ModelError(f"{path}: cannot load these weights into the {base.name} base ({first}); use the include_top=False file of the same network and --alpha") from exc


def _rescale_minus_one_to_one():
    import keras

    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")


@register("mobilenetv2", default_image_size=96, min_image_size=32, description="MobileNetV2 (keras.applications), width --alpha")
def _mobilenet_v2(options: ModelOptions):
    return _application("MobileNetV2", options, _rescale_minus_one_to_one(), alpha=options.alpha)


@register("mobilenetv3small", default_image_size=96, min_image_size=32, description="MobileNetV3-Small (keras.applications), width --alpha")
def _mobilenet_v3_small(options: ModelOptions):
    # MobileNetV3 carries its own Rescaling layer (include_preprocessing): pixels 0..255 in.
    return _application("MobileNetV3Small", options, None, alpha=options.alpha, include_preprocessing=True, minimalistic=False)


@register("resnet50", default_image_size=224, min_image_size=32, description="ResNet50 (keras.applications)")
def _resnet50(options: ModelOptions):
    return _application("ResNet50", options, _rescale_minus_one_to_one())
