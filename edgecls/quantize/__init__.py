"""Post-training quantization held to an accuracy budget (``edgecls quantize``).

Named parts: ``config`` (options and result types), ``calibration`` (a folder
→ uint8 batches at the model's input contract, shared by both formats),
``job`` (what each format's path is handed), ``tflite`` (LiteRT converter +
quantization debugger: ``quantize_tflite``), ``onnx`` (``onnxruntime.quantization``
QDQ + float-vs-QDQ comparison: ``quantize_onnx``), ``budget`` (evaluate, keep
the worst layers float, repeat) and ``report`` (JSON + Markdown). This module
runs them: load once, one ``QuantizeJob`` per format, one report.

>>> from edgecls.quantize import QuantizeConfig, quantize  # doctest: +SKIP
>>> config = QuantizeConfig(calib="calib_data/digits", eval_data="digits")  # doctest: +SKIP
>>> result = quantize("runs/cnn-digits/model.keras", config)  # doctest: +SKIP
>>> [(a.format, a.top1, a.size_ratio) for a in result.artifacts]  # doctest: +SKIP
[('tflite', 0.986, 0.27), ('onnx', 0.986, 0.29)]
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError, ModelError
from edgecls.base.fileio import file_digest
from edgecls.quantize.calibration import CalibrationSet, load_calibration, write_manifest
from edgecls.quantize.config import (
    FORMATS,
    IO_TYPES,
    METHODS,
    PRECISIONS,
    QuantizeConfig,
    QuantizedArtifact,
    QuantizeResult,
)
from edgecls.quantize.job import Evaluation, QuantizeJob
from edgecls.quantize.onnx import quantize_onnx
from edgecls.quantize.tflite import converter_source, quantize_tflite
from edgecls.runtime.metadata import ModelInfo

log = logging.getLogger(__name__)

_DEFAULT_CONFIG = QuantizeConfig()  # frozen: one shared default is safe


def quantize(
    model_path: str | Path, config: QuantizeConfig = _DEFAULT_CONFIG, *, callbacks: Sequence[Any] = ()
) -> QuantizeResult:
    """INT8 (or FP16) artifacts of a ``.keras`` (or ``.onnx``) model, held to ``config.max_drop``.

    Writes ``<stem>_int8.tflite`` / ``<stem>_int8.onnx`` (metadata inside), the
    calibration manifest and ``<stem>_<precision>_quantize.json``/``.md`` into ``config.out``
    (default: beside the model). ``callbacks`` (Keras callbacks, e.g. a progress bar) go to
    ``--qat``'s fine-tuning.
    """
    started = time.time()
    config.check()
    source = Path(model_path)
    formats = _formats(config, source)
    from edgecls.evaluate import model_info

    info = model_info(source)
    out_dir = Path(config.out) if config.out else source.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = source.stem.removesuffix("_fp32")  # model_fp32.onnx → model_int8.onnx
    calibration, calibration_record = _calibration(config, info, out_dir / f"{stem}_int8_calibration.json")
    warnings_seen: list[str] = list(calibration.warnings) if calibration else []
    evaluation = Evaluation.load(info, config.eval_data)
    if calibration is not None and evaluation is not None:
        overlap = evaluation.overlap(calibration)
        if overlap:
            message = (
                f"{overlap} of {evaluation.size} evaluation images are also calibration images: the measured drop is "
                "optimistic; calibrate on training images (edgecls calib-data)"
            )
            log.warning("%s", message)
            warnings_seen.append(message)
    keras_model = _load_keras(source) if source.suffix == ".keras" else None
    float_top1 = evaluation.float_top1(keras_model if keras_model is not None else source) if evaluation else None
    qat_run = _train_qat(config, keras_model, info, calibration, evaluation, source, callbacks)
    if qat_run is not None:
        warnings_seen += qat_run.record["warnings"]
    artifacts = []
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=out_dir) as scratch:
        # written on the first TFLite conversion of the Keras model, read by every later one
        litert = (
            converter_source(keras_model, folder=Path(scratch) / "saved_model") if keras_model is not None else None
        )
        for name in formats:
            work = Path(scratch) / name
            work.mkdir()
            artifact_info = info.with_provenance(
                precision=config.precision,
                quantized_from=source.name,
                source_digest=file_digest(source),  # its float siblings carry the same (bench flags a slower INT8)
                calibration=calibration_record or None,
                float_top1=float_top1,
                eval_data=config.eval_data,
                **({"qat": _qat_provenance(qat_run.record)} if qat_run is not None else {}),
            )
            job = QuantizeJob(
                source=source,
                keras_model=keras_model,
                calibration=calibration,
                info=artifact_info,
                evaluation=evaluation,
                float_top1=float_top1,
                config=config,
                work=work,
                final=out_dir / f"{stem}_{config.precision}.{name}",
                qat=qat_run,
                litert=litert,
            )
            artifacts.append(_QUANTIZERS[name](job))
            if qat_run is not None:
                from edgecls.quantize.ptq_baseline import compare_with_ptq, qat_below_ptq

                compare_with_ptq(artifacts[-1], job)
                below = qat_below_ptq(artifacts[-1], evaluation.size) if evaluation is not None else None
                if below:
                    warnings_seen.append(below)
            if artifacts[-1].within_budget is False:
                warnings_seen.append(
                    f"{artifacts[-1].path}: top-1 drop {artifacts[-1].drop:.2f} points exceeds --max-drop "
                    f"{config.max_drop} with {len(artifacts[-1].float_layers)} layer(s) in float"
                )
    result = QuantizeResult(
        model=str(source),
        float_top1=float_top1,
        eval_data=config.eval_data,
        n_eval_images=evaluation.size if evaluation else 0,
        eval_scope=evaluation.scope if evaluation else "",
        n_eval_skipped=evaluation.skipped if evaluation else 0,
        max_drop=config.max_drop,
        calibration=calibration_record,
        artifacts=artifacts,
        warnings=warnings_seen,
        config={**dataclasses.asdict(config), "formats": list(formats)},
        host=f"{platform.machine()} host ({platform.processor() or platform.system()})",
        seconds=round(time.time() - started, 2),
        qat={**qat_run.record, "float_top1": float_top1} if qat_run is not None else {},
    )
    from edgecls.quantize.report import write_reports

    write_reports(result, out_dir, f"{stem}_{config.precision}")  # an FP16 run beside an INT8 one keeps both reports
    return result


def _calibration(
    config: QuantizeConfig, info: ModelInfo, manifest: Path
) -> tuple[CalibrationSet | None, dict[str, Any]]:
    """The calibration images (INT8 only) and what the reports and metadata say about them."""
    if config.precision != "int8":
        return None, {}
    calibration = load_calibration(config.calib, info, size=config.calib_size, seed=config.seed)
    manifest_path, digest = write_manifest(calibration, manifest)
    return calibration, {
        "folder": calibration.folder,
        "n_images": len(calibration),
        "available": calibration.available,
        "seed": config.seed,
        "per_class": calibration.per_class_counts(),
        "manifest": str(manifest_path),
        "manifest_sha256": digest,
        "method": config.method,
        "per_channel": config.per_channel,
    }


def _train_qat(
    config: QuantizeConfig, keras_model, info: ModelInfo, calibration, evaluation, source: Path, callbacks=()
):
    """With ``--qat``: the QAT model trained once for every format (``edgecls.quantize.qat``), else None."""
    if not config.qat:
        return None
    if keras_model is None:
        raise ConfigError(f"{source}: --qat trains the Keras model; pass the .keras file, not an .onnx")
    from edgecls.quantize.qat import train_qat

    return train_qat(keras_model, info, config, calibration, evaluation, callbacks=callbacks)


def _qat_provenance(record: dict[str, Any]) -> dict[str, Any]:
    """What the artifact's metadata says about its QAT: enough to repeat it."""
    keys = ("data", "split", "n_images", "epochs", "learning_rate", "batch_size", "augment", "ema_decay", "weights")
    return {key: record[key] for key in keys} | {"keras_top1": record.get("keras_top1")}


def _formats(config: QuantizeConfig, source: Path) -> tuple[str, ...]:
    if source.suffix not in (".keras", ".onnx"):
        raise ModelError(
            f"{source}: quantize takes a .keras model (TFLite and ONNX) or a float .onnx (ONNX only), not "
            f"{source.suffix or 'this'}"
        )
    if source.suffix == ".onnx":
        if config.precision != "int8" or "tflite" in config.formats:
            raise ConfigError(
                f"{source}: from an .onnx model only ONNX INT8 can be made; pass the .keras model for TFLite"
            )
        return ("onnx",)
    if config.formats:
        return tuple(dict.fromkeys(config.formats))
    return FORMATS if config.precision == "int8" else ("tflite",)


_QUANTIZERS = {"tflite": quantize_tflite, "onnx": quantize_onnx}  # format → its whole path


def _load_keras(path: Path):
    from edgecls.adapters.keras_io import load_keras_model

    return load_keras_model(path)


__all__ = [
    "FORMATS",
    "IO_TYPES",
    "METHODS",
    "PRECISIONS",
    "QuantizeConfig",
    "QuantizeResult",
    "QuantizedArtifact",
    "quantize",
]
