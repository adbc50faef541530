"""The evaluation set of ``edgecls bench --data``: a folder of ``<label>/`` images for the runtime to score.

The images ``edgecls evaluate --data`` scores (``edgecls.evaluate.evaluation_images``
defines them once): a folder the user names, whole; the model's own training
data, its held-out split — for ``digits`` written as PNG files so a device
without scikit-learn can read it, for a folder its original files. Files that
do not decode are copied too, so the runtime counts them as skipped where
``edgecls evaluate`` does. Workstation side; the runtime scores the folder with
``edgecls.runtime.scoring.evaluate_folder``.

>>> eval_dir = prepare_eval_set("digits", ("m.tflite",), Path("/tmp/scratch"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np

from edgecls.base.errors import DataError
from edgecls.runtime.metadata import ModelInfo, read_model_info
from edgecls.runtime.preprocess import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


def prepare_eval_set(data: str, models: tuple[str, ...], scratch: Path) -> Path:
    """A folder of ``<label>/`` images that the runtime evaluates with ``Classifier.predict``.

    These are the images ``edgecls evaluate --data`` scores with the first
    model: ``digits`` and the model's own training folder by the held-out
    split it recorded (never training images), any other folder whole.
    """
    from edgecls.evaluate import is_training_data

    if data == "digits":
        return write_digits_eval_set(_model_info(models[0]), scratch / "eval")
    info = read_model_info(models[0])
    if info is not None and Path(data).is_dir() and is_training_data(info, data):
        return copy_held_out_files(info, Path(data), scratch / "eval", models=models)
    return select_eval_files(Path(data), scratch / "eval", models=models)


def copy_held_out_files(
    info: ModelInfo, folder: Path, out: Path, *, models: tuple[str, ...] = (), limit: int | None = None
) -> Path:
    """The original files of ``info``'s held-out split of ``folder``, copied into ``out/<label>/``.

    ``limit``: a seeded sample of that many (None: all of them, as ``edgecls evaluate`` scores).
    """
    from edgecls.evaluate import evaluation_images

    classes = folder / "val" if (folder / "val").is_dir() else folder
    _check_labels(
        classes, {p.name for p in classes.iterdir() if p.is_dir() and not p.name.startswith(".")}, models
    )  # before decoding anything
    evaluation = evaluation_images(info, str(folder))
    images = evaluation.images
    if len(images) == 0:
        raise DataError(f"{folder}: the held-out split is empty; give the folder a val/ subfolder or more images")
    chosen = range(len(images))
    if limit is not None and len(images) > limit:
        chosen = sorted(np.random.default_rng(0).choice(len(images), size=limit, replace=False))
        log.info("evaluation set: %d of the %d held-out images of %s (seed 0)", limit, len(images), folder)
    for index in chosen:
        source = Path(images.sources[index])
        label_dir = out / evaluation.class_names[int(images.labels[index])]
        label_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, label_dir / f"{index:05d}{source.suffix.lower()}")
    # Undecodable files too: the runtime counts them skipped, as edgecls evaluate does.
    for number, skipped in enumerate(evaluation.skipped if limit is None else ()):
        source = Path(skipped)
        label_dir = out / source.relative_to(classes).parts[0]
        label_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, label_dir / f"skipped-{number:05d}{source.suffix.lower()}")
    return out


def write_digits_eval_set(info: ModelInfo, out: Path) -> Path:
    """The validation split ``info``'s model was trained with, as lossless 8x8 PNGs.

    Kept at the digits' native 8x8 so each model's own ``Classifier.preprocess``
    does the resizing, exactly as training and ``edgecls evaluate`` did.
    """
    from edgecls.data import write_class_folders
    from edgecls.evaluate import validation_set

    native = dataclasses.replace(info, input_size=(8, 8), channel_order="GRAY", channels=1)
    images, dataset = validation_set(native, "digits")
    write_class_folders(
        out, [pixels[:, :, 0] for pixels in images.images], images.labels, class_names=dataset.class_names
    )
    log.info("evaluation set: %d digits validation images (seed %s)", len(images), dataset.split.get("seed"))
    return out


def select_eval_files(folder: Path, out: Path, *, models: tuple[str, ...] = (), limit: int | None = None) -> Path:
    """The images of ``folder/<label>/`` (or its ``val/``: ``edgecls.evaluate.evaluation_folder``), copied into ``out``.

    ``limit``: a seeded sample of that many (None: the whole folder, as
    ``edgecls evaluate`` scores it). Every ``<label>`` must be one of each
    model's labels: checked here, before anything is timed, so that the error
    names the user's folder.
    """
    from edgecls.evaluate import evaluation_folder

    folder = evaluation_folder(folder)
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.parent != folder
    )
    if not files:
        raise DataError(f"{folder}: no images in <label>/ subfolders")
    _check_labels(folder, {path.relative_to(folder).parts[0] for path in files}, models)
    if limit is not None and len(files) > limit:
        chosen = np.random.default_rng(0).choice(len(files), size=limit, replace=False)
        files = [files[i] for i in sorted(chosen)]
        log.info("evaluation set: %d of the images in %s (seed 0)", limit, folder)
    for index, path in enumerate(files):
        label = path.relative_to(folder).parts[0]
        (out / label).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / label / f"{index:05d}{path.suffix.lower()}")
    return out


def _check_labels(folder: Path, found: set[str], models: tuple[str, ...]) -> None:
    for model in models:
        info = read_model_info(model)
        if info is None:  # not made by edgecls: its classes are named 0..N-1, checked when it runs
            continue
        unknown = sorted(found - set(info.labels))
        if unknown:
            shown = ", ".join(info.labels[:12]) + (", …" if len(info.labels) > 12 else "")
            raise DataError(
                f"{folder}: class folders must be named after {model}'s labels ({shown}); not labels: "
                f"{', '.join(unknown[:5])}"
            )


def _model_info(model: str) -> ModelInfo:
    info = read_model_info(model)
    if info is None:  # not made by edgecls: digits labels 0..9, the default split
        return ModelInfo(tuple(str(d) for d in range(10)), (8, 8), 1, "GRAY")
    return info
