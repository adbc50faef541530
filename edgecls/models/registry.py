"""The model registry: a name → a builder, and one factory.

Every model takes pixels 0..255 (normalisation is its first layers, ``edgecls.models.normalization``)
and ends in ``Dense(name="logits")`` → ``Activation("softmax", name="probs")``, so distillation can
reach the logits and pruning knows the head. The builders register themselves in ``edgecls.models.zoo``.

>>> model = build_model("cnn", num_classes=10, image_size=(32, 32), channels=1)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgecls.base.errors import ConfigError
from edgecls.models.normalization import PREPROCESSING

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


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[[ModelOptions], object]
    default_image_size: int
    min_image_size: int
    description: str
    preprocessing: str = "unit"  # one of PREPROCESSING
    keras_module: str | None = None  # its keras.applications module (preprocess_input), None for our own
    has_alpha: bool = False  # a width multiplier (--alpha): the MobileNets; the others have none


_REGISTRY: dict[str, ModelEntry] = {}


def register(
    name: str,
    *,
    default_image_size: int,
    min_image_size: int,
    description: str,
    preprocessing: str = "unit",
    keras_module: str | None = None,
    has_alpha: bool = False,
):
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"{name}: preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")

    def decorate(builder: Callable[[ModelOptions], object]):
        _REGISTRY[name] = ModelEntry(
            name, builder, default_image_size, min_image_size, description, preprocessing, keras_module, has_alpha
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
