"""Evaluation of any artifact on the exact split its model was trained with.

``.keras`` models run in Keras; ``.tflite`` and ``.onnx`` run through
``edgecls.runtime`` — the code path a device runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgecls.data import Dataset, ImageSet, load_dataset
from edgecls.errors import DataError, ModelError
from edgecls.fileio import write_json
from edgecls.runtime.metadata import ModelInfo, read_model_info

log = logging.getLogger(__name__)

BATCH = 64


@dataclass
class EvalResult:
    model: str
    engine: str  # what computed the scores, e.g. "keras 3.15.1" or "litert 2.3.0 (XNNPACK/CPU, 2 threads)"
    data: str
    n_images: int
    top1: float
    top5: float | None
    per_class: list[dict[str, Any]] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    confusion_png: str | None = None
    labels: list[str] = field(default_factory=list)


def model_info(model_path: str | Path) -> ModelInfo:
    """The artifact's metadata; for a ``.keras`` without any, what its graph tells."""
    path = Path(model_path)
    info = read_model_info(path)
    if info is not None:
        return info
    if path.suffix == ".keras":
        from edgecls.keras_io import model_info_from_keras

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
        data, image_size=info.input_size, channel_order=info.channel_order,
        val_split=float(split.get("val_split", 0.2)), seed=int(split.get("seed", 0)),
    )
    recorded = split.get("val_sources_sha256")
    if recorded and data == provenance.get("dataset") and dataset.split.get("val_sources_sha256") != recorded:
        raise DataError(f"{data}: the validation split no longer matches the one the model was trained with (files added or removed?); evaluate on a fixed val/ folder instead")
    if dataset.class_names != info.labels:
        raise DataError(f"{data}: classes {list(dataset.class_names)[:5]}… do not match the model's labels {list(info.labels)[:5]}…")
    return dataset.val, dataset


def predict_scores(model: Any, images: ImageSet | np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """Class scores (N, classes) for uint8 NHWC pixels, from a path, a Keras model or a Classifier."""
    pixels = images.images if isinstance(images, ImageSet) else images
    scorer = make_scorer(model, threads)
    return np.concatenate([scorer(pixels[i : i + BATCH]) for i in range(0, len(pixels), BATCH)]) if len(pixels) else np.zeros((0, 0))


def top1_accuracy(model: Any, images: ImageSet) -> float:
    """Share of ``images`` whose top-1 class is their label, for anything ``predict_scores`` takes."""
    return float(np.mean(predict_scores(model, images).argmax(axis=1) == images.labels))


def make_scorer(model: Any, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a uint8 NHWC batch to class scores, for a path, a Keras model or a Classifier."""
    from edgecls.runtime import Classifier

    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.suffix == ".keras":
            from edgecls.keras_io import load_keras_model

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


def evaluate(model_path: str | Path, data: str | None = None, *, threads: int | None = None, out_dir: str | Path | None = None) -> EvalResult:
    """Top-1/top-5, per-class precision/recall/F1 and a confusion matrix on the held-out split.

    >>> evaluate("runs/cnn-digits/model.keras", "digits").top1  # doctest: +SKIP
    0.986
    """
    info = model_info(model_path)
    images, dataset = validation_set(info, data)
    scores = predict_scores(model_path, images, threads=threads)
    result = score_result(scores, images.labels, info.labels)
    result.model, result.data, result.engine = str(model_path), dataset.name, describe_engine(model_path, threads)
    out = Path(out_dir) if out_dir else Path(model_path).parent
    stem = Path(model_path).name.replace(".", "_")
    result.confusion_png = str(plot_confusion(np.asarray(result.confusion), info.labels, out / f"confusion_{stem}.png", title=f"{Path(model_path).name} on {dataset.name} val"))
    write_json(out / f"eval_{stem}.json", result)
    return result


def score_result(scores: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> EvalResult:
    """Accuracy figures from scores and true labels (no I/O)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    predicted = scores.argmax(axis=1)
    top1 = float(np.mean(predicted == labels)) if len(labels) else 0.0
    top5 = None
    if scores.shape[1] > 5:
        best5 = np.argsort(-scores, axis=1)[:, :5]
        top5 = float(np.mean((best5 == labels[:, None]).any(axis=1)))
    classes = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    per_class = [
        {"label": names[i], "precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4), "f1": round(float(f1[i]), 4), "support": int(support[i])}
        for i in classes
    ]
    confusion = confusion_matrix(labels, predicted, labels=classes).tolist()
    return EvalResult(model="", engine="", data="", n_images=int(len(labels)), top1=top1, top5=top5, per_class=per_class, confusion=confusion, labels=list(names))


def plot_confusion(confusion: np.ndarray, labels: tuple[str, ...], path: Path, *, title: str) -> Path:
    from edgecls.plots import pyplot, save_figure

    plt = pyplot()
    size = max(4.0, 0.45 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(confusion, cmap="Blues")
    if len(labels) <= 30:
        axis.set_xticks(range(len(labels)), labels, rotation=90)
        axis.set_yticks(range(len(labels)), labels)
        for (row, col), count in np.ndenumerate(confusion):
            if count:
                axis.text(col, row, str(count), ha="center", va="center", fontsize=7, color="white" if count > confusion.max() / 2 else "black")
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.tight_layout()
    return save_figure(figure, path)
