"""Where a backbone's starting weights come from: ImageNet through Keras' cache, a file, or none.

``weights="imagenet"`` resolves the very file ``keras.applications`` would
download for that network, width and input size (same name, URL and hash,
read from the Keras module), in ``$KERAS_HOME/models/`` (default
``~/.keras/models/``). A file already there is used as is, with no network
access; otherwise ``keras.utils.get_file`` downloads it. Offline with nothing
cached is a one-line ``ModelError`` naming the file and where to put it.

>>> imagenet_weights_available("mobilenetv2", alpha=0.35, image_size=(96, 96))
True
>>> imagenet_weights_available("mobilenetv3small", alpha=0.35, image_size=(96, 96))
False
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from edgecls.base.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

IMAGENET = "imagenet"
CACHE_SUBDIR = "models"

MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)  # others load the 224 file, as keras.applications does
MOBILENET_V3_ALPHAS = (0.75, 1.0)


@dataclass(frozen=True)
class WeightsFile:
    """One ``include_top=False`` ImageNet weights file as ``keras.applications`` names it."""

    file_name: str
    origin: str
    file_hash: str | None  # md5 (32 hex) or sha256, None where Keras checks none (MobileNetV2)


def resolve_weights(weights) -> str | Path | None:
    """``"imagenet"``, ``None`` (also ``"none"``), or the ``Path`` of a weights file (.h5, .weights.h5, .keras)."""
    if weights is None:
        return None
    text = str(weights)
    if text.lower() == "none":
        return None
    if text.lower() == IMAGENET:
        return IMAGENET
    path = Path(weights)
    if not path.is_file():
        raise ModelError(
            f"{path}: no such weights file; --weights takes imagenet, none or a .h5/.weights.h5/.keras file"
        )
    if not (path.name.endswith(".h5") or path.suffix == ".keras"):
        raise ModelError(f"{path}: --weights takes a Keras .h5 / .weights.h5 file or a .keras model from edgecls train")
    return path


def _keras_module(name: str):
    return importlib.import_module(f"keras.src.applications.{name}")


def imagenet_file(model: str, *, alpha: float = 1.0, image_size: tuple[int, int] = (224, 224)) -> WeightsFile | None:
    """The notop file Keras uses for ``model`` at this width and size; ``None`` where Keras has none."""
    if model == "mobilenetv2":
        if float(alpha) not in MOBILENET_V2_ALPHAS:
            return None
        rows = image_size[0] if image_size[0] == image_size[1] and image_size[0] in MOBILENET_V2_SIZES else 224
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
        return WeightsFile(name, _keras_module("mobilenet_v2").BASE_WEIGHT_PATH + name, None)
    if model in ("mobilenetv3small", "mobilenetv3large"):
        if float(alpha) not in MOBILENET_V3_ALPHAS:
            return None
        module = _keras_module("mobilenet_v3")
        key = f"{model.removeprefix('mobilenetv3')}_224_{float(alpha)}_float"
        name = f"weights_mobilenet_v3_{key}_no_top_v2.h5"
        return WeightsFile(name, module.BASE_WEIGHT_PATH + name, module.WEIGHTS_HASHES[key][1])
    if float(alpha) != 1.0:
        return None
    if model == "resnet50":
        module = _keras_module("resnet")
        name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
        return WeightsFile(name, module.BASE_WEIGHTS_PATH + name, module.WEIGHTS_HASHES["resnet50"][1])
    if model == "efficientnetb0":
        module = _keras_module("efficientnet")
        name = "efficientnetb0_notop.h5"
        return WeightsFile(name, module.BASE_WEIGHTS_PATH + name, module.WEIGHTS_HASHES["b0"][1])
    if model == "efficientnetv2b0":
        module = _keras_module("efficientnet_v2")
        name = "efficientnetv2-b0_notop.h5"
        return WeightsFile(name, module.BASE_WEIGHTS_PATH + name, module.WEIGHTS_HASHES["b0"][1])
    return None


def imagenet_weights_available(model: str, *, alpha: float = 1.0, image_size: tuple[int, int] = (224, 224)) -> bool:
    """Whether Keras publishes ImageNet weights for this network, width and size (not whether they are cached)."""
    return imagenet_file(model, alpha=alpha, image_size=image_size) is not None


def imagenet_weights_cached(model: str, *, alpha: float = 1.0, image_size: tuple[int, int] = (224, 224)) -> bool:
    """Whether Keras' cache already holds the ImageNet file for this network, width and size (no network needed).

    >>> imagenet_weights_cached("cnn")
    False
    """
    entry = imagenet_file(model, alpha=alpha, image_size=image_size)
    return entry is not None and (keras_home() / CACHE_SUBDIR / entry.file_name).is_file()


def keras_home() -> Path:
    """``$KERAS_HOME`` as it is now (Keras reads it once, at import), else Keras' own default."""
    if os.environ.get("KERAS_HOME"):
        return Path(os.environ["KERAS_HOME"])
    from keras.src.backend import config

    return Path(os.path.expanduser(config.keras_home()))


def imagenet_weights_file(model: str, *, alpha: float, image_size: tuple[int, int], channels: int = 3) -> Path:
    """The local path of ``model``'s ImageNet notop weights: from Keras' cache, else downloaded into it."""
    if channels != 3:
        raise ConfigError(
            f"ImageNet weights take RGB input; {model} was asked for {channels} channel(s): use --channels RGB or "
            "--weights none"
        )
    entry = imagenet_file(model, alpha=alpha, image_size=image_size)
    if entry is None:
        raise ConfigError(
            f"Keras has no ImageNet weights for {model} at alpha {alpha}: use --weights none"
            + (f" or --alpha {' / '.join(map(str, MOBILENET_V3_ALPHAS))}" if model.startswith("mobilenetv3") else "")
        )
    cached = keras_home() / CACHE_SUBDIR / entry.file_name
    if cached.is_file():
        _check_hash(cached, entry.file_hash)
        log.info("ImageNet weights for %s from the Keras cache: %s", model, cached)
        return cached
    import keras

    try:
        # Keras prints "Downloading data from URL" and its progress bar on stdout, which is for results
        # (--json): they go to stderr with the other progress
        with contextlib.redirect_stdout(sys.stderr):
            downloaded = keras.utils.get_file(
                entry.file_name,
                entry.origin,
                cache_subdir=CACHE_SUBDIR,
                file_hash=entry.file_hash,
                cache_dir=str(keras_home()),
            )
        return Path(downloaded)
    except Exception as exc:  # offline: Keras raises Exception("URL fetch failure ..."), OSError, ValueError
        raise ModelError(
            f"cannot download the ImageNet weights of {model} ({entry.file_name}) from {entry.origin}: "
            f"put that file in {cached.parent}/ (or set KERAS_HOME), or train from scratch with --weights none"
        ) from exc


def _check_hash(path: Path, file_hash: str | None) -> None:
    if file_hash is None:
        return
    from keras.src.utils import file_utils

    if not file_utils.validate_file(str(path), file_hash, algorithm="auto"):
        log.warning(
            "%s does not match the hash keras.applications publishes for it (%s); using it as it is", path, file_hash
        )


def load_from_keras_model(model, base, path: Path) -> None:
    """Start ``model`` from an earlier edgecls ``.keras`` of the same network.

    Every layer of ``base`` with weights takes the saved layer of the same name
    (a different network or width is an error); the head (``logits``) too when
    its shape matches (the same number of classes), else it stays new.
    """
    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.models.registry import LOGITS_LAYER

    saved = load_keras_model(path)
    saved_layers = {layer.name: layer for layer in saved.layers}
    for layer in base.layers:
        if not layer.weights:
            continue
        source = saved_layers.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if source is None or [tuple(w.shape) for w in source.weights] != shapes:
            found = (
                "no such layer"
                if source is None
                else f"weights {[tuple(w.shape) for w in source.weights]}, expected {shapes}"
            )
            raise ModelError(
                f"{path}: not a {model.name} of this width ({layer.name}: {found}); "
                "start from a model of the same --model and --alpha, or use --weights none"
            )
        layer.set_weights(source.get_weights())
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
    head, saved_head = model.get_layer(LOGITS_LAYER), saved_layers.get(LOGITS_LAYER)
    if saved_head is not None and [tuple(w.shape) for w in saved_head.weights] == [
        tuple(w.shape) for w in head.weights
    ]:
        head.set_weights(saved_head.get_weights())
        log.info("%s: base and head from %s", model.name, path)
    else:
        log.info("%s: base from %s; a new head (the class count differs)", model.name, path)
