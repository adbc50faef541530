"""Scoring any artifact: on a folder the user names (scored whole) or on its model's held-out split.

What a folder of evaluation images scores is defined once, here
(``evaluation_images``), for ``edgecls evaluate``, ``edgecls bench --data``
and ``edgecls quantize --eval-data``: a folder named as evaluation data is
scored whole (its ``val/`` when it is a ``train/`` + ``val/`` data set); a
split is taken only from the model's own training data, by the split it
recorded. ``.keras`` models run in Keras; ``.tflite`` and ``.onnx`` run
through ``edgecls.runtime`` — the code path a device runs. Metrics are numpy;
the confusion PNG is drawn when matplotlib is installed (a device may not have it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.base.errors import DataError, ModelError
from edgecls.base.fileio import write_json
from edgecls.data import Dataset, ImageSet, load_dataset, load_images
from edgecls.runtime.metadata import ModelInfo, read_model_info

log = logging.getLogger(__name__)

BATCH = 64


@dataclass
class EvalResult:
    model: str
    engine: str  # what computed the scores, e.g. "keras 3.15.1" or "litert 2.3.0 (XNNPACK/CPU, 2 threads)"
    data: str
    n_images: int  # images scored
    top1: float
    top5: float | None
    per_class: list[dict[str, Any]] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    confusion_png: str | None = None
    labels: list[str] = field(default_factory=list)
    n_skipped: int = 0  # image files of the evaluation data that could not be decoded
    scope: str = ""  # what of ``data`` was scored: "whole folder", "held-out split (…)"


@dataclass
class EvalImages:
    """What a model is scored on: ``evaluation_images``' answer."""

    images: ImageSet
    class_names: tuple[str, ...]
    name: str  # the data set or folder scored
    scope: str  # "whole folder", "val/ folder", "held-out split (seed 0, 20 %)"
    skipped: list[str] = field(default_factory=list)  # undecodable image files among those to score

    def __len__(self) -> int:
        return len(self.images)


def is_training_data(info: ModelInfo, data: str | None) -> bool:
    """Whether ``data`` is the model's own training data (``digits``, the folder it recorded): scored by its split."""
    recorded = info.provenance.get("dataset")
    if data is None or data == "digits":
        return True
    if not recorded or recorded == "digits":
        return False
    return data == recorded or Path(data).resolve() == Path(recorded).resolve()


def evaluation_folder(data: str | Path) -> Path:
    """The folder of ``<label>/`` subfolders ``data`` names: itself, or its ``val/`` in a ``train/`` + ``val/`` set."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: no such evaluation folder; give a folder of <label>/ subfolders (or digits)")
    if (root / "val").is_dir() and ((root / "train").is_dir() or not _class_folders(root) - {"val"}):
        return root / "val"
    return root


def evaluation_images(info: ModelInfo, data: str | None = None) -> EvalImages:
    """The images a model is scored on, and what of ``data`` they are.

    ``data`` is None (the data set the model records), ``digits`` or a folder.
    The model's own training data gives its held-out split, rebuilt exactly
    (``validation_set``); any other folder is scored whole, every decodable
    image of its ``<label>/`` subfolders, each label one of the model's.

    >>> evaluation_images(info, "photos/val").scope  # doctest: +SKIP
    'whole folder'
    """
    if is_training_data(info, data):
        images, dataset = validation_set(info, data)
        split = dataset.split
        if split.get("mode") == "folders":
            scope = "held-out split (its val/ folder)"
            val_root = str(Path(dataset.name) / "val")
            skipped = [path for path in dataset.skipped if path.startswith(val_root)]
        else:
            scope = f"held-out split (seed {split.get('seed', 0)}, {100 * float(split.get('val_split', 0.2)):.0f} %)"
            skipped = list(dataset.skipped)  # never assigned to a split: counted where the split is scored
        return EvalImages(images, dataset.class_names, dataset.name, scope, skipped)
    folder = evaluation_folder(data)
    found = _class_folders(folder)
    unknown = sorted(found - set(info.labels))
    if not found or unknown:
        shown = ", ".join(info.labels[:12]) + (", …" if len(info.labels) > 12 else "")
        raise DataError(
            f"{folder}: class folders must be named after the model's labels ({shown}); "
            + ("found none" if not found else f"not labels: {', '.join(unknown[:5])}")
        )
    images, _names, skipped = load_images(
        folder, image_size=info.input_size, channel_order=info.channel_order, class_names=info.labels
    )
    if len(images) == 0:
        raise DataError(f"{folder}: no decodable images in its <label>/ subfolders")
    scope = "whole folder" if folder == Path(data) else "val/ folder"
    return EvalImages(images, tuple(info.labels), str(folder), scope, skipped)


def _class_folders(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}


def model_info(model_path: str | Path) -> ModelInfo:
    """The artifact's metadata; for a ``.keras`` without any, what its graph tells."""
    path = Path(model_path)
    info = read_model_info(path)
    if info is not None:
        return info
    if path.suffix == ".keras":
        from edgecls.adapters.keras_io import model_info_from_keras

        return model_info_from_keras(path)
    raise ModelError(f"{path}: carries no edgecls metadata (labels, input size); export it with `edgecls export`")


def validation_set(info: ModelInfo, data: str | None = None) -> tuple[ImageSet, Dataset]:
    """The images ``info``'s model was validated on, rebuilt exactly.

    ``data`` defaults to the data set recorded in the model. For a split made
    by ``train`` (digits, or a folder without ``val/``) the same seed and
    fraction are used and the file list is checked against the recorded digest,
    so the split cannot silently drift.
    """
    provenance = info.provenance
    data = data or provenance.get("dataset")
    if not data:
        raise DataError("the model records no data set; pass --data digits|PATH")
    split = provenance.get("split", {})
    dataset = load_dataset(
        data,
        image_size=info.input_size,
        channel_order=info.channel_order,
        val_split=float(split.get("val_split", 0.2)),
        seed=int(split.get("seed", 0)),
    )
    recorded = split.get("val_sources_sha256")
    if recorded and data == provenance.get("dataset") and dataset.split.get("val_sources_sha256") != recorded:
        raise DataError(
            f"{data}: the validation split no longer matches the one the model was trained with (files added or "
            "removed?); evaluate on a fixed val/ folder instead"
        )
    if dataset.class_names != info.labels:
        raise DataError(
            f"{data}: classes {list(dataset.class_names)[:5]}… do not match the model's labels {list(info.labels)[:5]}…"
        )
    return dataset.val, dataset


def predict_scores(model: Any, images: ImageSet | np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """Class scores (N, classes) for uint8 NHWC pixels, from a path, a Keras model or a Classifier."""
    pixels = images.images if isinstance(images, ImageSet) else images
    scorer = make_scorer(model, threads)
    return (
        np.concatenate([scorer(pixels[i : i + BATCH]) for i in range(0, len(pixels), BATCH)])
        if len(pixels)
        else np.zeros((0, 0))
    )


def top1_accuracy(model: Any, images: ImageSet) -> float:
    """Share of ``images`` whose top-1 class is their label, for anything ``predict_scores`` takes."""
    return float(np.mean(predict_scores(model, images).argmax(axis=1) == images.labels))


def make_scorer(model: Any, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a uint8 NHWC batch to class scores, for a path, a Keras model or a Classifier."""
    from edgecls.runtime import Classifier

    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.suffix == ".keras":
            from edgecls.adapters.keras_io import load_keras_model

            model = load_keras_model(path)
        else:
            model = Classifier(path, threads=threads)
    if isinstance(model, Classifier):
        return model.scores
    return lambda batch: np.asarray(model(batch.astype(np.float32), training=False))


def describe_engine(model_path: str | Path, threads: int | None = None) -> str:
    path = Path(model_path)
    if path.suffix == ".keras":
        import keras

        return f"keras {keras.__version__}"
    from edgecls.runtime import load_engine

    engine = load_engine(path, threads=threads)
    return f"{engine.name} {engine.version} ({engine.provider}, {engine.threads} threads, host)"


def evaluate(
    model_path: str | Path, data: str | None = None, *, threads: int | None = None, out_dir: str | Path | None = None
) -> EvalResult:
    """Top-1/top-5, per-class precision/recall/F1 and a confusion matrix on ``evaluation_images(info, data)``.

    >>> evaluate("runs/cnn-digits/model.keras", "digits").top1  # doctest: +SKIP
    0.986
    """
    info = model_info(model_path)
    evaluation = evaluation_images(info, data)
    scores = predict_scores(model_path, evaluation.images, threads=threads)
    result = score_result(scores, evaluation.images.labels, info.labels)
    result.model, result.data, result.engine = str(model_path), evaluation.name, describe_engine(model_path, threads)
    result.scope, result.n_skipped = evaluation.scope, len(evaluation.skipped)
    out = Path(out_dir) if out_dir else Path(model_path).parent
    stem = Path(model_path).name.replace(".", "_")
    title = f"{Path(model_path).name} on {evaluation.name} ({evaluation.scope})"
    png = plot_confusion(np.asarray(result.confusion), info.labels, out / f"confusion_{stem}.png", title=title)
    result.confusion_png = str(png) if png else None
    write_json(out / f"eval_{stem}.json", result)
    return result


def score_result(scores: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> EvalResult:
    """Accuracy figures from scores and true labels (no I/O; numpy only)."""
    predicted = scores.argmax(axis=1) if len(labels) else np.zeros(0, np.int64)
    top1 = float(np.mean(predicted == labels)) if len(labels) else 0.0
    top5 = None
    if scores.ndim == 2 and scores.shape[1] > 5:
        best5 = np.argsort(-scores, axis=1)[:, :5]
        top5 = float(np.mean((best5 == labels[:, None]).any(axis=1))) if len(labels) else 0.0
    confusion = confusion_matrix(labels, predicted, len(names))
    per_class = []
    for index, name in enumerate(names):
        metrics = {key: round(value, 4) for key, value in class_metrics(confusion, index).items()}
        per_class.append({"label": name, **metrics, "support": int(confusion[index].sum())})
    return EvalResult(
        model="",
        engine="",
        data="",
        n_images=int(len(labels)),
        top1=top1,
        top5=top5,
        per_class=per_class,
        confusion=confusion.tolist(),
        labels=list(names),
    )


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(true, predicted) counts, ``n_classes`` square: row i is class i's images."""
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return confusion


def class_metrics(confusion: np.ndarray, index: int) -> dict[str, float]:
    """Precision, recall and F1 of class ``index``; 0 where nothing divides (scikit-learn's ``zero_division=0``)."""
    true_positive = float(confusion[index, index])
    predicted, actual = float(confusion[:, index].sum()), float(confusion[index].sum())
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def plot_confusion(confusion: np.ndarray, labels: tuple[str, ...], path: Path, *, title: str) -> Path | None:
    """The confusion matrix as a PNG; ``None`` (with one warning) where matplotlib is not installed, as on a device."""
    from edgecls.base.plots import matplotlib_missing, pyplot, save_figure

    if matplotlib_missing("confusion matrix"):
        return None

    plt = pyplot()
    size = max(4.0, 0.45 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(confusion, cmap="Blues")
    if len(labels) <= 30:
        axis.set_xticks(range(len(labels)), labels, rotation=90)
        axis.set_yticks(range(len(labels)), labels)
        for (row, col), count in np.ndenumerate(confusion):
            if count:
                axis.text(
                    col,
                    row,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if count > confusion.max() / 2 else "black",
                )
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.tight_layout()
    return save_figure(figure, path)
