"""What ``edgecls quantize`` takes and returns: its options, and the record of each artifact it made."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from edgecls.base.errors import ConfigError
from edgecls.quantize.budget import Attempt, LayerError

PRECISIONS = ("int8", "fp16")
IO_TYPES = ("int8", "uint8", "float")  # TFLite input/output tensor type
METHODS = ("minmax", "percentile", "entropy")  # ONNX Runtime calibration methods
FORMATS = ("tflite", "onnx")
# QAT fine-tuning: brief, at a small rate (Krishnamoorthi 2018, §3: fine-tune a trained float model), the float
# model as teacher. Screened on EfficientNet-B0 trained from scratch on photos10 (held-out top-1 of the other region,
# float 84.1, step 0 83.2): 6 epochs at 3e-5 ended at 84.1 (agreement with float 97.4 %); 1e-4 went through a dip
# (79.4 after epoch 1 on another EfficientNet-B0) and fitting the labels instead of the teacher lost top-1 at 1e-5 and
# 1e-4. 12 epochs rather than 6: on the QAT benchmark's three EfficientNet-B0s, scored on 5,000 held-out patches, 6
# epochs ended 0.36 (per channel) / 0.45 (per tensor) points under float on the mean, against issue 27's 0.3; 12
# epochs on the same float models: benchmarks/results/qat.json (its sixth run).
QAT_EPOCHS = 12
QAT_LR = 3e-5
# How the ONNX INT8 is quantized (``edgecls.quantize.onnx``): "cpu" runs right on every CPU (7-bit weights);
# "tensorrt" is what TensorRT builds as INT8 (symmetric int8 everywhere, zero point 0, full 8-bit weights).
ONNX_SCHEMES = ("cpu", "tensorrt")
OnnxScheme = Literal["cpu", "tensorrt"]


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
    onnx_scheme: OnnxScheme = "cpu"  # ONNX INT8: cpu | tensorrt (see ONNX_SCHEMES; `--target` a Jetson picks tensorrt)
    eval_data: str | None = None  # digits | PATH: enables the accuracy budget
    max_drop: float = 1.0  # top-1 points INT8 may lose against float
    max_float_layers: int = 5  # the budget loop keeps at most this many tensors in float
    out: str | None = None  # None: beside the model
    qat: bool = False  # quantization-aware training first (edgecls.quantize.qat), then convert the QAT model
    qat_data: str | None = None  # QAT's training images (its training split); None: the data set the model records
    qat_epochs: int = QAT_EPOCHS
    qat_lr: float = QAT_LR

    def check(self) -> None:
        for name, value, allowed in (
            ("precision", self.precision, PRECISIONS),
            ("--io", self.io, IO_TYPES),
            ("--method", self.method, METHODS),
            ("onnx_scheme", self.onnx_scheme, ONNX_SCHEMES),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        unknown = [name for name in self.formats if name not in FORMATS]
        if unknown:
            raise ConfigError(f"--format must be a comma list of {', '.join(FORMATS)}, got {', '.join(unknown)}")
        if self.precision == "fp16" and "onnx" in self.formats:
            raise ConfigError(
                "--fp16 makes TFLite models for GPU delegates; for ONNX on a Jetson, TensorRT builds FP16 engines from "
                "the FP32 ONNX: use --format tflite"
            )
        if self.precision == "fp16" and (self.calib or self.io != "int8"):
            raise ConfigError("--calib and --io are INT8 options; an FP16 model keeps float32 input and output")
        if self.precision == "int8" and not self.calib:
            raise ConfigError(
                "INT8 needs calibration images: pass --calib DIR (e.g. calib_data/digits, made by `edgecls calib-data`)"
            )
        if self.calib_size < 1:
            raise ConfigError(f"--calib-size must be at least 1, got {self.calib_size}")
        if self.max_drop < 0 or self.max_float_layers < 0:
            raise ConfigError("--max-drop and --max-float-layers must not be negative")
        if self.qat and self.precision != "int8":
            raise ConfigError("--qat trains for INT8; FP16 needs no training: drop --qat or use --int8")
        if self.qat and (self.qat_epochs < 1 or not self.qat_lr > 0):
            raise ConfigError(
                f"--qat-epochs must be 1 or more and --qat-lr above 0, got {self.qat_epochs}, {self.qat_lr}"
            )
        if self.qat_data is not None and not self.qat:
            raise ConfigError("--data is QAT's training data: pass --qat with it")


def onnx_scheme_for(target: str) -> str:
    """The ONNX INT8 scheme for a device target (a name, alias or target file): tensorrt on a Jetson, else cpu."""
    from edgecls.runtime.targets import get_target

    return "tensorrt" if get_target(target).kind == "jetson" else "cpu"


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
    integer_ops: int | None = (
        None  # TFLite ops that compute on 8/16-bit integer tensors (edgecls.adapters.tflite_graph)
    )
    worst_layers: list[LayerError] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    input: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    ptq_top1: float | None = None  # with --qat: plain post-training INT8 of the float model, same format and scheme
    qat_agreement: float | None = None  # with --qat: share of evaluation images where it and the QAT Keras model agree


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
    eval_scope: str = ""  # what of eval_data was scored: "whole folder", "held-out split (…)"
    n_eval_skipped: int = 0  # its image files that could not be decoded
    qat: dict[str, Any] = field(default_factory=dict)  # with --qat: how the QAT model was trained, its Keras top-1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
