"""Post-training quantization held to an accuracy budget (``edgecls quantize``).

Named parts: ``calibration`` (a folder → uint8 batches at the model's input
contract, shared by both formats), ``tflite`` (LiteRT converter + quantization
debugger), ``onnx`` (``onnxruntime.quantization`` QDQ + float-vs-QDQ
comparison), ``budget`` (evaluate, keep the worst layers float, repeat) and
``report`` (JSON + Markdown).

>>> from edgecls.quantize import QuantizeConfig, quantize  # doctest: +SKIP
>>> result = quantize("runs/cnn-digits/model.keras", QuantizeConfig(calib="calib_data/digits", eval_data="digits"))  # doctest: +SKIP
>>> [(a.format, a.top1, a.size_ratio) for a in result.artifacts]  # doctest: +SKIP
[('tflite', 0.986, 0.27), ('onnx', 0.986, 0.29)]
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.errors import ConfigError, ModelError
from edgecls.quantize.budget import Attempt, BudgetOutcome, LayerError, run_budget
from edgecls.quantize.calibration import CalibrationSet, load_calibration, write_manifest
from edgecls.quantize.onnx import METHODS
from edgecls.quantize.tflite import IO_TYPES
from edgecls.runtime.metadata import ModelInfo

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp16")
FORMATS = ("tflite", "onnx")


@dataclass(frozen=True)
class QuantizeConfig:
    """Options of ``edgecls quantize``; a bare ``--int8`` is ``QuantizeConfig()`` (plus ``--calib``).

    ``formats=()`` means every format the precision and the input allow:
    TFLite and ONNX for INT8 from a ``.keras``, ONNX from an ``.onnx``, TFLite for FP16.
    """

    precision: str = "int8"  # int8 | fp16
    calib: str | None = None  # calibration folder; required for int8
    formats: tuple[str, ...] = ()
    calib_size: int = 300
    seed: int = 0
    method: str = "minmax"  # ONNX calibration: minmax | percentile | entropy (LiteRT calibrates min/max)
    per_channel: bool = True
    io: str = "int8"  # TFLite input/output type: int8 | uint8 | float
    eval_data: str | None = None  # digits | PATH: enables the accuracy budget
    max_drop: float = 1.0  # top-1 points INT8 may lose against float
    max_float_layers: int = 5  # the budget loop keeps at most this many tensors in float
    out: str | None = None  # None: beside the model

    def check(self) -> None:
        for name, value, allowed in (("precision", self.precision, PRECISIONS), ("--io", self.io, IO_TYPES), ("--method", self.method, METHODS)):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        unknown = [name for name in self.formats if name not in FORMATS]
        if unknown:
            raise ConfigError(f"--format must be a comma list of {', '.join(FORMATS)}, got {', '.join(unknown)}")
        if self.precision == "fp16" and "onnx" in self.formats:
            raise ConfigError("--fp16 makes TFLite models for GPU delegates; for ONNX on a Jetson, TensorRT builds FP16 engines from the FP32 ONNX: use --format tflite")
        if self.precision == "fp16" and (self.calib or self.io != "int8"):
            raise ConfigError("--calib and --io are INT8 options; an FP16 model keeps float32 input and output")
        if self.precision == "int8" and not self.calib:
            raise ConfigError("INT8 needs calibration images: pass --calib DIR (e.g. calib_data/digits, made by `edgecls calib-data`)")
        if self.calib_size < 1:
            raise ConfigError(f"--calib-size must be at least 1, got {self.calib_size}")
        if self.max_drop < 0 or self.max_float_layers < 0:
            raise ConfigError("--max-drop and --max-float-layers must not be negative")


@dataclass
class QuantizedArtifact:
    path: str
    format: str
    precision: str
    io: str  # input/output tensor type
    scheme: str  # how it was quantized, in words
    size_bytes: int
    fp32_size_bytes: int
    size_ratio: float
    top1: float | None
    agreement: float | None  # share of evaluation images where the artifact and float predict the same class
    drop: float | None  # top-1 points lost against float
    within_budget: bool | None
    float_layers: list[str] = field(default_factory=list)
    float_nodes: list[str] = field(default_factory=list)
    float_ops: int | None = None  # TFLite ops that touch a float tensor (0: integer-only graph)
    worst_layers: list[LayerError] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    input: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class QuantizeResult:
    model: str
    float_top1: float | None
    eval_data: str | None
    n_eval_images: int
    max_drop: float
    calibration: dict[str, Any]
    artifacts: list[QuantizedArtifact]
    warnings: list[str]
    config: dict[str, Any]
    host: str
    seconds: float
    report_json: str = ""
    report_markdown: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def quantize(model_path: str | Path, config: QuantizeConfig = QuantizeConfig()) -> QuantizeResult:
    """INT8 (or FP16) artifacts of a ``.keras`` (or ``.onnx``) model, held to ``config.max_drop``.

    Writes ``<stem>_int8.tflite`` / ``<stem>_int8.onnx`` (metadata inside), the
    calibration manifest and ``<stem>_<precision>_quantize.json``/``.md`` into ``config.out``
    (default: beside the model).
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
    evaluation = _Evaluation.load(source, info, config.eval_data)
    if calibration is not None and evaluation is not None:
        overlap = evaluation.overlap(calibration)
        if overlap:
            message = f"{overlap} of {evaluation.size} evaluation images are also calibration images: the measured drop is optimistic; calibrate on training images (edgecls calib-data)"
            log.warning("%s", message)
            warnings_seen.append(message)
    keras_model = _load_keras(source) if source.suffix == ".keras" else None
    float_top1 = evaluation.float_top1(keras_model if keras_model is not None else source) if evaluation else None
    artifacts = []
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=out_dir) as scratch:
        for name in formats:
            work = Path(scratch) / name
            work.mkdir()
            artifact_info = info.with_provenance(
                precision=config.precision, quantized_from=source.name, calibration=calibration_record or None,
                float_top1=float_top1, eval_data=config.eval_data,
            )
            make = _tflite_artifact if name == "tflite" else _onnx_artifact
            artifacts.append(make(source, keras_model, calibration, artifact_info, evaluation, float_top1, config, work, out_dir / f"{stem}_{config.precision}.{name}"))
            if artifacts[-1].within_budget is False:
                warnings_seen.append(f"{artifacts[-1].path}: top-1 drop {artifacts[-1].drop:.2f} points exceeds --max-drop {config.max_drop} with {len(artifacts[-1].float_layers)} layer(s) in float")
    result = QuantizeResult(
        model=str(source), float_top1=float_top1, eval_data=config.eval_data, n_eval_images=evaluation.size if evaluation else 0,
        max_drop=config.max_drop, calibration=calibration_record, artifacts=artifacts, warnings=warnings_seen,
        config={**dataclasses.asdict(config), "formats": list(formats)}, host=f"{platform.machine()} host ({platform.processor() or platform.system()})",
        seconds=round(time.time() - started, 2),
    )
    from edgecls.quantize.report import write_reports

    write_reports(result, out_dir, f"{stem}_{config.precision}")  # an FP16 run beside an INT8 one keeps both reports
    return result


def _calibration(config: QuantizeConfig, info: ModelInfo, manifest: Path) -> tuple[CalibrationSet | None, dict[str, Any]]:
    """The calibration images (INT8 only) and what the reports and metadata say about them."""
    if config.precision != "int8":
        return None, {}
    calibration = load_calibration(config.calib, info, size=config.calib_size, seed=config.seed)
    manifest_path, digest = write_manifest(calibration, manifest)
    return calibration, {
        "folder": calibration.folder, "n_images": len(calibration), "available": calibration.available, "seed": config.seed,
        "per_class": calibration.per_class_counts(), "manifest": str(manifest_path), "manifest_sha256": digest,
        "method": config.method, "per_channel": config.per_channel,
    }


def _formats(config: QuantizeConfig, source: Path) -> tuple[str, ...]:
    if source.suffix not in (".keras", ".onnx"):
        raise ModelError(f"{source}: quantize takes a .keras model (TFLite and ONNX) or a float .onnx (ONNX only), not {source.suffix or 'this'}")
    if source.suffix == ".onnx":
        if config.precision != "int8" or "tflite" in config.formats:
            raise ConfigError(f"{source}: from an .onnx model only ONNX INT8 can be made; pass the .keras model for TFLite")
        return ("onnx",)
    if config.formats:
        return tuple(dict.fromkeys(config.formats))
    return FORMATS if config.precision == "int8" else ("tflite",)


def _load_keras(path: Path):
    from edgecls.keras_io import load_keras_model

    return load_keras_model(path)


class _Evaluation:
    """The evaluation images and the float model's predictions on them."""

    def __init__(self, images, labels: np.ndarray, name: str) -> None:
        self.images, self.labels, self.name = images, labels, name
        self.float_predictions: np.ndarray | None = None

    @classmethod
    def load(cls, source: Path, info: ModelInfo, data: str | None) -> "_Evaluation | None":
        if not data:
            return None
        from edgecls.evaluate import validation_set

        images, dataset = validation_set(info, data)
        return cls(images, images.labels, dataset.name)

    @property
    def size(self) -> int:
        return len(self.labels)

    def float_top1(self, model) -> float:
        from edgecls.evaluate import predict_scores

        self.float_predictions = predict_scores(model, self.images).argmax(axis=1)
        return float(np.mean(self.float_predictions == self.labels))

    def score(self, artifact_path: Path) -> tuple[float, float]:
        """(top-1, agreement with float) of an artifact, through the runtime's Classifier."""
        from edgecls.evaluate import predict_scores

        predictions = predict_scores(Path(artifact_path), self.images).argmax(axis=1)
        return float(np.mean(predictions == self.labels)), float(np.mean(predictions == self.float_predictions))

    def overlap(self, calibration: CalibrationSet) -> int:
        """Evaluation images whose pixels equal a calibration image's."""
        calibrated = {image.tobytes() for image in calibration.images}
        return sum(image.tobytes() in calibrated for image in self.images.images)


def _finish_artifact(candidate: Path, final: Path, fmt: str, info: ModelInfo, outcome: BudgetOutcome | None, evaluation) -> Path:
    """Write the chosen candidate to ``final`` atomically, with its measured figures in the metadata."""
    provenance: dict[str, Any] = {"float_layers": outcome.float_layers if outcome else []}
    if outcome is not None and outcome.top1 is not None:
        provenance.update(top1=round(outcome.top1, 6), top1_data=evaluation.name, top1_n_images=evaluation.size)
    final_info = info.with_provenance(**provenance)
    if fmt == "tflite":
        from edgecls.export.tflite import write_tflite_bytes

        return write_tflite_bytes(candidate.read_bytes(), final, final_info)
    import onnx

    from edgecls.export.onnx import write_onnx_proto

    return write_onnx_proto(onnx.load(str(candidate)), final, final_info)


def _artifact(final: Path, fmt: str, precision: str, io: str, scheme: str, fp32_size: int, outcome: BudgetOutcome | None, started: float, **extra: Any) -> QuantizedArtifact:
    size = final.stat().st_size
    return QuantizedArtifact(
        path=str(final), format=fmt, precision=precision, io=io, scheme=scheme, size_bytes=size, fp32_size_bytes=fp32_size,
        size_ratio=round(size / fp32_size, 4) if fp32_size else 0.0,
        top1=outcome.top1 if outcome else None, agreement=outcome.agreement if outcome else None, drop=outcome.drop if outcome else None,
        within_budget=outcome.within_budget if outcome else None, float_layers=outcome.float_layers if outcome else [],
        float_nodes=outcome.float_nodes if outcome else [], worst_layers=outcome.worst_layers if outcome else [],
        attempts=outcome.attempts if outcome else [], seconds=round(time.time() - started, 2), **extra,
    )


def _tflite_artifact(source, keras_model, calibration, info, evaluation, float_top1, config: QuantizeConfig, work: Path, final: Path) -> QuantizedArtifact:
    from edgecls.export.metadata import embed_tflite
    from edgecls.export.tflite import convert_tflite
    from edgecls.quantize import tflite

    started = time.time()
    fp32_size = len(embed_tflite(convert_tflite(keras_model), info))
    if config.precision == "fp16":
        candidate = work / "fp16.tflite"
        candidate.write_bytes(embed_tflite(tflite.convert_fp16(keras_model), info))
        outcome = _judge_once(candidate, evaluation, float_top1)
        io, scheme = "float", "FP16 weights, float32 compute on CPU (LiteRT converter)"
    else:
        requantizer = tflite.TFLiteRequantizer(keras_model, calibration, info, io=config.io, per_channel=config.per_channel, scratch=work)
        outcome = run_budget(
            requantizer, evaluation.score if evaluation else None, float_top1=float_top1, max_drop=config.max_drop, max_float_layers=config.max_float_layers
        )
        candidate, io = Path(outcome.path), config.io
        weights = "per-channel" if config.per_channel else "per-tensor"
        scheme = f"full-integer INT8 (LiteRT converter): {weights} int8 weights, int8 activations (min/max calibration), {io} I/O"
    written = _finish_artifact(candidate, final, "tflite", info, outcome, evaluation)
    model_bytes = written.read_bytes()
    return _artifact(
        written, "tflite", config.precision, io, scheme, fp32_size, outcome, started,
        float_ops=len(tflite.float_ops(model_bytes)), input=tflite.io_quantization(model_bytes)["input"],
    )


def _onnx_artifact(source, keras_model, calibration, info, evaluation, float_top1, config: QuantizeConfig, work: Path, final: Path) -> QuantizedArtifact:
    import onnx

    from edgecls.export.metadata import embed_onnx
    from edgecls.quantize.onnx import OnnxRequantizer

    started = time.time()
    float_path = work / "float.onnx"
    if keras_model is not None:
        from edgecls.export.onnx import convert_onnx

        onnx.save(convert_onnx(keras_model), str(float_path))
        layer_names = [layer.name for layer in keras_model.layers]
    else:
        float_path.write_bytes(source.read_bytes())
        layer_names = []
    fp32_size = embed_onnx(onnx.load(str(float_path)), info).ByteSize()
    requantizer = OnnxRequantizer(float_path, calibration, info, method=config.method, per_channel=config.per_channel, layer_names=layer_names, scratch=work)
    outcome = run_budget(
        requantizer, evaluation.score if evaluation else None, float_top1=float_top1, max_drop=config.max_drop, max_float_layers=config.max_float_layers
    )
    written = _finish_artifact(Path(outcome.path), final, "onnx", info, outcome, evaluation)
    weights = "per-channel" if config.per_channel else "per-tensor"
    scheme = f"QDQ INT8 (onnxruntime.quantization): {weights} int8 weights in a 7-bit range (reduce_range), int8 activations ({config.method} calibration), float32 input"
    return _artifact(written, "onnx", "int8", "float", scheme, fp32_size, outcome, started, input={"dtype": "float32", "scale": 0.0, "zero_point": 0})


def _judge_once(candidate: Path, evaluation, float_top1) -> BudgetOutcome:
    """An FP16 model is not budgeted (nothing to keep in float); it is measured."""
    if evaluation is None or float_top1 is None:
        return BudgetOutcome(candidate, [], [], None, None, None, None, [])
    top1, agreement = evaluation.score(candidate)
    drop = round((float_top1 - top1) * 100.0, 4)
    return BudgetOutcome(candidate, [], [], top1, agreement, drop, None, [], [Attempt([], [], top1, agreement, drop, 0.0)])


__all__ = ["QuantizeConfig", "QuantizeResult", "QuantizedArtifact", "quantize"]
