"""Export a trained ``.keras`` model to deployable artifacts, one module per format.

Every artifact carries its labels, input contract and provenance, and is
checked against the Keras model before ``export`` returns (parity).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecls.base.errors import ConfigError, DataError
from edgecls.base.fileio import file_digest, write_json
from edgecls.runtime.metadata import ModelInfo

log = logging.getLogger(__name__)

FORMATS = ("tflite", "onnx")
PARITY_SAMPLE = 256


@dataclass
class Artifact:
    path: str
    format: str
    precision: str
    size_bytes: int
    parity_top1: float  # share of sample images where the artifact's top-1 equals Keras'
    parity_max_abs: float  # largest |Δ score| against Keras on the sample
    parity_sample: str  # what the sample was


@dataclass
class ExportResult:
    model: str
    artifacts: list[Artifact] = field(default_factory=list)
    seconds: float = 0.0


def export(
    model_path: str | Path,
    *,
    formats: Sequence[str] = FORMATS,
    fp16: bool = False,
    out_dir: str | Path | None = None,
    unsafe: bool = False,
) -> ExportResult:
    """Write FP32 (or FP16 TFLite) artifacts of ``model_path`` and check their parity.

    >>> export("runs/cnn-digits/model.keras").artifacts[0].parity_top1  # doctest: +SKIP
    1.0
    """
    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.evaluate import model_info, predict_scores
    from edgecls.export.onnx import write_onnx
    from edgecls.export.tflite import fp16_options, write_tflite

    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(
            f"--format takes {', '.join(FORMATS)} (comma-separated), got {', '.join(formats) or 'nothing'}"
        )
    started = time.time()
    model_path = Path(model_path)
    model = load_keras_model(model_path, unsafe=unsafe)
    info = model_info(model_path)
    source_digest = file_digest(model_path)  # the artifacts made from one model know each other (bench's siblings)
    out = Path(out_dir) if out_dir else model_path.parent / "export"
    sample, sample_name = parity_sample(info)
    reference = predict_scores(model, sample)
    result = ExportResult(model=str(model_path))
    for fmt in formats:
        precision = "fp16" if fp16 and fmt == "tflite" else "fp32"
        if fp16 and fmt == "onnx":
            log.warning(
                "--fp16 applies to TFLite only; the ONNX artifact is FP32 (TensorRT builds FP16 engines from it)"
            )
        artifact_info = info.with_provenance(
            precision=precision, format=fmt, exported_from=str(model_path), source_digest=source_digest
        )
        path = out / f"{model_path.stem}_{precision}.{fmt}"
        log.info("writing %s", path)
        if fmt == "tflite":
            write_tflite(model, path, artifact_info, **(fp16_options() if fp16 else {}))
        else:
            write_onnx(model, path, artifact_info)
        scores = predict_scores(path, sample)
        result.artifacts.append(
            Artifact(
                path=str(path),
                format=fmt,
                precision=precision,
                size_bytes=path.stat().st_size,
                parity_top1=float(np.mean(scores.argmax(1) == reference.argmax(1))),
                parity_max_abs=float(np.abs(scores - reference).max()),
                parity_sample=sample_name,
            )
        )
    result.seconds = round(time.time() - started, 2)
    write_json(out / "export.json", _with_earlier_artifacts(out / "export.json", result))
    return result


def _with_earlier_artifacts(record: Path, result: ExportResult) -> dict:
    """``result`` as JSON, still listing what an earlier export of the same model wrote here (FP32, then --fp16).

    An earlier artifact is listed only if its file remains.
    """
    document = dataclasses.asdict(result)
    try:
        earlier = json.loads(record.read_text()) if record.is_file() else {}
    except ValueError:
        earlier = {}
    if earlier.get("model") == result.model:
        written = {artifact.path for artifact in result.artifacts}
        kept = [
            a
            for a in earlier.get("artifacts", [])
            if a.get("path") not in written and Path(a.get("path", "")).is_file()
        ]
        document["artifacts"] = kept + document["artifacts"]
    return document


def parity_sample(info: ModelInfo, *, size: int = PARITY_SAMPLE, seed: int = 0) -> tuple[np.ndarray, str]:
    """Images to compare an artifact with its Keras model on: validation images
    when the model's data set can be loaded here, random pixels otherwise."""
    from edgecls.evaluate import validation_set

    try:
        images, dataset = validation_set(info)
        return images.images[:size], f"{min(size, len(images))} validation images of {dataset.name}"
    except DataError as exc:
        log.info("parity on random pixels: %s", exc)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(64, *info.input_size, info.channels), dtype=np.uint8)
    return pixels, "64 random-pixel images"
