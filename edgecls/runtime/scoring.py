"""What an artifact is and how it scores, with the runtime alone: its precision, its top-1 over a folder.

The folder is ``<label>/`` subfolders of images (the workstation's
``edgecls.bench.evalset`` writes one); runs on the device without TensorFlow.

>>> top1, images, skipped = evaluate_folder(Classifier("m.tflite"), "eval/")  # doctest: +SKIP
>>> artifact_precision(Classifier("m_int8.tflite"))  # doctest: +SKIP
'int8'
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecls.errors import DataError
from edgecls.runtime.model import Classifier
from edgecls.runtime.preprocess import IMAGE_SUFFIXES, read_image


def evaluate_folder(classifier: Classifier, folder: str | Path) -> tuple[float, int, int]:
    """Top-1 of ``Classifier.predict`` over ``folder/<label>/*`` images: (top1, images, skipped)."""
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
    correct = seen = skipped = 0
    for name in classes:
        for image_path in sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            image = read_image(image_path)
            if image is None:
                skipped += 1
                continue
            label, _score = classifier.predict(image, top_k=1)[0]
            correct += label == name
            seen += 1
    if seen == 0:
        raise DataError(f"{folder}: no decodable images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    return correct / seen, seen, skipped


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
