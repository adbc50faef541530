"""What an artifact is and how it scores, with the runtime alone: its precision, its top-1 over a folder (clean
or under camera corruptions).

The folder is ``<label>/`` subfolders of images (the workstation's
``edgecls.bench.evalset`` writes one); runs on the device without TensorFlow.

>>> top1, images, skipped = evaluate_folder(Classifier("m.tflite"), "eval/")  # doctest: +SKIP
>>> spec = CorruptionSpec.of(["jpeg_compression"])
>>> evaluate_folder_corrupted(Classifier("m.tflite"), "eval/", spec)  # doctest: +SKIP
{'jpeg_compression': [0.98, 0.97, 0.97, 0.95, 0.93]}
>>> artifact_precision(Classifier("m_int8.tflite"))  # doctest: +SKIP
'int8'
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgecls.base.errors import DataError
from edgecls.runtime.corruptions import CorruptionSpec, corrupt, image_rng
from edgecls.runtime.model import Classifier
from edgecls.runtime.preprocess import IMAGE_SUFFIXES, read_image


def evaluate_folder(classifier: Classifier, folder: str | Path) -> tuple[float, int, int]:
    """Top-1 of ``Classifier.predict`` over ``folder/<label>/*`` images: (top1, images, skipped)."""
    correct = seen = skipped = 0
    for _index, name, image in _labelled_frames(classifier, folder):
        if image is None:
            skipped += 1
            continue
        label, _score = classifier.predict(image, top_k=1)[0]
        correct += label == name
        seen += 1
    return correct / seen, seen, skipped


def evaluate_folder_corrupted(
    classifier: Classifier, folder: str | Path, spec: CorruptionSpec
) -> dict[str, list[float]]:
    """Top-1 of ``Classifier.predict`` over the same images, each frame corrupted first: name → top-1 per severity.

    The frame is corrupted at its own size, before the classifier's resize, as a
    camera's frame would be; image ``i`` of the folder (sorted by class, then
    path; undecodable files count) uses ``image_rng(spec.seed, i)``.
    """
    correct = {name: np.zeros(len(spec.severities), np.int64) for name in spec.names}
    seen = 0
    for index, name, image in _labelled_frames(classifier, folder):
        if image is None:
            continue
        seen += 1
        for corruption in spec.names:
            for column, severity in enumerate(spec.severities):
                frame = corrupt(image, corruption, severity, image_rng(spec.seed, index))
                label, _score = classifier.predict(frame, top_k=1)[0]
                correct[corruption][column] += label == name
    return {corruption: [round(int(count) / seen, 4) for count in counts] for corruption, counts in correct.items()}


def _labelled_frames(classifier: Classifier, folder: str | Path) -> Iterator[tuple[int, str, np.ndarray | None]]:
    """(index, label, frame or None if undecodable) for each image of ``folder/<label>/``; labels checked first."""
    folder = Path(folder)
    if not folder.is_dir():
        hint = (
            ": digits is made on the workstation (scikit-learn); there, edgecls bench --data digits --remote USER@HOST "
            "writes its evaluation set and copies it over"
            if str(folder) == "digits"
            else ""
        )
        raise DataError(f"{folder}: no such evaluation folder{hint}")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [name for name in classes if name not in classifier.labels]
    if not classes or unknown:
        raise DataError(
            f"{folder}: class folders must be named after the model's labels ({', '.join(classifier.labels[:12])}…); "
            f"{'found none' if not classes else 'not labels: ' + ', '.join(unknown[:5])}"
        )
    index = decoded = 0
    for name in classes:
        for image_path in sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            image = read_image(image_path)
            decoded += image is not None
            yield index, name, image
            index += 1
    if decoded == 0:
        raise DataError(f"{folder}: no decodable images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")


def artifact_precision(classifier: Classifier) -> str:
    """int8 / fp16 / fp32, from the artifact's provenance or its tensors."""
    recorded = classifier.info.provenance.get("precision")
    if isinstance(recorded, str) and recorded:
        return recorded.lower()
    spec = classifier.engine.input
    if spec.quantized:
        return "int8"
    if spec.dtype == np.float16:
        return "fp16"
    interpreter = getattr(classifier.engine, "_interpreter", None)
    if interpreter is None:
        return "unknown"  # an ONNX graph with float inputs may still hold QDQ int8 inside
    dtypes = {np.dtype(detail["dtype"]) for detail in interpreter.get_tensor_details()}
    if np.dtype(np.int8) in dtypes:
        return "int8"
    return "fp16" if np.dtype(np.float16) in dtypes else "fp32"
