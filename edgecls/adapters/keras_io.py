"""Loading and saving ``.keras`` models, with edgecls metadata inside the archive."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

from edgecls.base.errors import ModelError
from edgecls.base.fileio import atomic_path
from edgecls.runtime.metadata import METADATA_KEY, ModelInfo, read_model_info

log = logging.getLogger(__name__)


def load_keras_model(path: str | Path, *, unsafe: bool = False):
    """Load a ``.keras`` file with Keras safe mode on.

    Safe mode refuses to deserialise arbitrary Python (``Lambda`` layers), so a
    model file someone sent you cannot run code; ``unsafe=True`` is the only
    way around it.
    """
    import keras

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    if path.suffix != ".keras":
        raise ModelError(f"{path}: expected a Keras 3 .keras file (got {path.suffix or 'no suffix'})")
    if not zipfile.is_zipfile(path):
        raise ModelError(
            f"{path}: not a Keras 3 .keras archive (not a zip file); was it saved with model.save('x.keras')?"
        )
    try:
        return keras.saving.load_model(path, safe_mode=not unsafe, compile=False)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise ModelError(
                f"{path}: the model contains code (e.g. a Lambda layer) that safe mode will not run; pass "
                "--unsafe-load only if you trust its source"
            ) from exc
        raise ModelError(f"{path}: Keras cannot load this model ({exc})") from exc
    except Exception as exc:  # h5py / zip / config errors
        raise ModelError(f"{path}: Keras cannot load this model ({type(exc).__name__}: {exc})") from exc


def save_keras_model(model, path: str | Path, info: ModelInfo) -> Path:
    """Save ``model`` atomically with ``info`` stored as ``edgecls.json`` in the archive.

    Saved without the optimizer's state (Adam's two moments per weight would
    triple the file): every ``.keras`` edgecls writes holds its weights only,
    so that sizes compare (trained, pruned, distilled).
    """
    path = Path(path)
    model = without_optimizer(model)
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(f"{METADATA_KEY}.json", info.to_json())
    return path


def without_optimizer(model):
    """A copy of a compiled ``model`` with the same weights and no optimizer (the model itself when it has none)."""
    if getattr(model, "optimizer", None) is None:
        return model
    try:
        clean = model_from_config(model)
    except Exception as exc:  # a model Keras cannot rebuild from its config: saved with the state, not lost
        log.warning(
            "%s cannot be rebuilt without its optimizer (%s); saving it with the optimizer's state", model.name, exc
        )
        return model
    clean.set_weights(model.get_weights())
    return clean


def model_from_config(model, config: dict | None = None):
    """A new model of ``model``'s class, with fresh weights, from ``config``.

    ``config`` defaults to ``model``'s own ``get_config()``.

    Layer classes from outside Keras (a user's own) are found by name when the
    config is read back.
    """
    import keras

    custom = {
        type(layer).__name__: type(layer) for layer in model.layers if not type(layer).__module__.startswith("keras")
    }
    with keras.saving.custom_object_scope(custom):
        return type(model).from_config(model.get_config() if config is None else config)


def model_info_from_keras(path: str | Path, model=None) -> ModelInfo:
    """The metadata of a ``.keras`` file, or what the graph alone tells when it has none."""
    info = read_model_info(path)
    if info is not None:
        return info
    if model is None:
        model = load_keras_model(path)
    _, height, width, channels = model.input_shape
    classes = model.output_shape[-1]
    return ModelInfo(
        tuple(str(i) for i in range(classes)),
        (int(height), int(width)),
        int(channels),
        "GRAY" if channels == 1 else "RGB",
    )
