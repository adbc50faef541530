"""``edgecls distill``: a teacher's softened outputs train an edge-sized student.

Built on ``keras.distillation``: a ``Distiller`` over the *logits* of both
models (every edgecls model ends in ``Dense("logits")`` → ``softmax("probs")``;
the Distiller sees logits sub-models that share the layers, so training it
trains the full student), ``LogitsDistillation`` for the outputs and, for
matched intermediate layers, ``FeatureDistillation``. Training goes through
``edgecls.train.fit`` like every stage: cosine schedule, best epoch kept,
checkpoints and ``--resume``, TensorBoard, ``runs/NAME/``. The Keras part, in
memory, is ``edgecls.distillation``; this module is the stage around it.

The loss per batch, with ``w = kd_weight`` and temperature ``T``::

    (1 - w) · CE(labels, student) + w · [T² · KL(softmax(t/T) ‖ softmax(s/T)) + Σ MSE(features)]

The student trains on the teacher's own training split and is scored on the
teacher's held-out split (rebuilt from the teacher's metadata), so teacher,
student-alone and distilled figures compare the same images.

>>> config = DistillConfig(  # doctest: +SKIP
...     teacher="runs/cnn-digits/model.keras", student="runs/cnn-digits/model_pruned.keras", baseline=True
... )
>>> result = distill(config)  # doctest: +SKIP
>>> result.teacher_top1 - result.student_top1, result.student_macs / result.teacher_macs  # doctest: +SKIP
(0.0, 0.26)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecls.data import parse_augment
from edgecls.distillation import DistillLoss, distill_model, distillation_losses, logits_model
from edgecls.errors import ConfigError, ModelError
from edgecls.evaluate import top1_accuracy
from edgecls.fileio import write_json
from edgecls.runs import describe_device, resolve_resume, write_run_files
from edgecls.runtime.metadata import ModelInfo
from edgecls.train import FitOptions, best_epoch, read_history

log = logging.getLogger(__name__)

REPORT_NAME = "distill.json"

__all__ = [
    "DistillConfig",
    "DistillLoss",
    "DistillResult",
    "check_compatible",
    "distill",
    "distill_model",
    "distillation_losses",
    "interrupted",
    "logits_model",
    "parse_feature_layers",
]


@dataclass(frozen=True)
class DistillConfig:
    """Options of ``edgecls distill``; the defaults are the CLI's."""

    teacher: str  # a trained .keras
    student: str  # a registry name (built for the teacher's labels and input), or a .keras file (e.g. a pruned model)
    data: str | None = None  # None: the data set recorded in the teacher
    alpha: float | None = None  # width multiplier of a registry student (MobileNets); not the loss weight
    # T 2 / kd-weight 0.5: a pruned student distilled from its unpruned teacher (10 epochs, digits, seeds 0-2)
    # ended 0.19 points behind on average against 0.37 for T 4 / 0.9 (benchmarks/results/defaults_chain.json,
    # issue 26); benchmarks/distill.py measured the same order for prune recovery (0.77 vs 1.15 points).
    temperature: float = 2.0
    kd_weight: float = 0.5  # weight of the distillation term; the label loss gets 1 - kd_weight
    feature_layers: tuple[tuple[str, str], ...] = ()  # (teacher layer, student layer) pairs, outputs of equal shape
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 8  # early stopping on val accuracy; 0 = off
    augment: str = "auto"  # auto | none | comma list of flip,rotate,zoom
    baseline: bool = False  # also train the same student alone (same data, epochs, seed)
    seed: int = 0
    out: str | None = None  # None: runs/<student>-distilled
    resume: bool = False

    def __post_init__(self) -> None:
        # JSON (a resumed run's config.json) gives lists: keep the config hashable and comparable
        object.__setattr__(self, "feature_layers", tuple((str(t), str(s)) for t, s in self.feature_layers))

    def check(self) -> None:
        if not 0.0 <= self.kd_weight <= 1.0:
            raise ConfigError(
                f"--kd-weight must be between 0 and 1 (the label loss gets 1 - kd-weight), got {self.kd_weight}"
            )
        if self.temperature <= 0.0:
            raise ConfigError(f"--temperature must be positive (typically 2 to 6), got {self.temperature}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"--epochs and --batch-size must be at least 1, got {self.epochs} and {self.batch_size}")
        if self.alpha is not None and self.student_is_file:
            raise ConfigError(
                f"--alpha sets the width of a registry student; {self.student} is a .keras file whose width is fixed: "
                "drop --alpha"
            )
        if self.alpha is not None and self.alpha <= 0.0:
            raise ConfigError(f"--alpha (student width multiplier) must be positive, got {self.alpha}")

    @property
    def student_is_file(self) -> bool:
        """A path (``pruned.keras``, ``runs/a/model.keras``) rather than a registry name (``mobilenetv2``)."""
        return Path(self.student).suffix != "" or "/" in self.student

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path("runs") / f"{Path(self.student).stem}-distilled"

    def loss(self) -> DistillLoss:
        return DistillLoss(self.temperature, self.kd_weight, self.feature_layers)

    def fit_options(self, data: str) -> FitOptions:
        """``fit``'s options for both the distillation and the baseline; ``data`` names the set (augmentation)."""
        return FitOptions(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            seed=self.seed,
            augment=parse_augment(self.augment, data),
            patience=self.patience or None,
            resume=self.resume,
        )


@dataclass
class DistillResult:
    """What distillation produced, measured on the teacher's held-out split."""

    model_path: str
    run_dir: str
    report_path: str
    curves_png: str
    teacher_top1: float
    student_top1: float  # the distilled student
    baseline_top1: float | None  # the same student trained alone (--baseline), else None
    teacher_params: int
    teacher_macs: int
    student_params: int  # the baseline has the same architecture
    student_macs: int
    data: str
    n_train: int
    n_val: int
    evaluated_with: str  # where the top-1 figures were computed
    epochs_run: int
    best_epoch: int
    baseline_best_epoch: int | None
    baseline_model_path: str | None
    teacher_path: str
    student_source: str
    temperature: float
    kd_weight: float
    feature_layers: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def distill(config: DistillConfig, *, callbacks: Sequence[Any] = ()) -> DistillResult:
    """Distil ``config.teacher`` into ``config.student``; write ``runs/NAME/``.

    Writes ``model.keras`` (the distilled student: the full softmax model, with
    edgecls metadata), ``distill.json``, ``history.json``, ``curves.png``,
    ``config.json``, ``split.json`` and, with ``baseline``,
    ``baseline/model.keras``. Nothing is written before the teacher, the
    student and the data have been checked against each other.
    """
    from edgecls.keras_io import save_keras_model

    started = time.time()
    config.check()
    run_dir = config.run_dir()
    config = resolve_resume(config, run_dir, backups=_backups(run_dir), what="distillation")
    teacher, teacher_info, student, dataset = _checked_inputs(config, run_dir)
    write_run_files(run_dir, config, dataset)
    fit_options = config.fit_options(config.data or teacher_info.provenance.get("dataset", ""))
    model_path = run_dir / "model.keras"
    if config.resume and _phase_done(run_dir):
        log.info("%s: the distillation had finished before the interruption; keeping it", model_path)
        student, history = _load(model_path), read_history(run_dir)
    else:
        history = distill_model(
            teacher, student, dataset, options=fit_options, loss=config.loss(), run_dir=run_dir, callbacks=callbacks
        )
    teacher_top1, student_top1 = top1_accuracy(teacher, dataset.val), top1_accuracy(student, dataset.val)
    info = _student_metadata(
        config, teacher_info, student_info(config, student, teacher_info), dataset, student_top1, teacher_top1, run_dir
    )
    save_keras_model(student, model_path, info)

    baseline = None
    if config.baseline:
        baseline = _baseline(config, teacher_info, dataset, info, run_dir / "baseline", fit_options, callbacks)
        log.info(
            "top-1: teacher %.4f, student alone %.4f, distilled %.4f", teacher_top1, baseline["top1"], student_top1
        )
    result = _result(config, run_dir, teacher, student, dataset, history, baseline, teacher_top1, student_top1)
    result.seconds = round(time.time() - started, 2)
    write_json(result.report_path, result.to_dict())
    return result


def _checked_inputs(config: DistillConfig, run_dir: Path) -> tuple[Any, ModelInfo, Any, Any]:
    """Teacher, its metadata, the student and the teacher's own split, checked against each other."""
    from edgecls.evaluate import validation_set
    from edgecls.keras_io import model_info_from_keras

    teacher = _load(config.teacher)
    teacher_info = model_info_from_keras(config.teacher, teacher)
    student = build_student(config, teacher_info)
    check_compatible(
        teacher,
        student,
        teacher_info,
        student_info(config, student, teacher_info),
        feature_layers=config.feature_layers,
    )
    _refuse_overwrite(run_dir, config)
    _, dataset = validation_set(
        teacher_info, config.data
    )  # DataError when the data's classes are not the teacher's labels
    if "split" not in teacher_info.provenance:
        log.warning(
            "%s records no training split: validating on a fresh split the teacher may have trained on", config.teacher
        )
    log.info(
        "data: %s, %d train / %d val images (the teacher's split)", dataset.name, len(dataset.train), len(dataset.val)
    )
    return teacher, teacher_info, student, dataset


def _baseline(
    config: DistillConfig,
    teacher_info: ModelInfo,
    dataset: Any,
    info: ModelInfo,
    run_dir: Path,
    fit_options: FitOptions,
    callbacks: Sequence[Any],
) -> dict[str, Any]:
    """The same student (same initial weights), data, epochs, schedule and seed, on the labels alone."""
    from edgecls.keras_io import save_keras_model
    from edgecls.train import fit

    model = build_student(config, teacher_info)
    if config.resume and _phase_done(run_dir):
        model, history = _load(run_dir / "model.keras"), read_history(run_dir)
    else:
        history = fit(model, dataset, options=fit_options, run_dir=run_dir, callbacks=callbacks)
    top1 = top1_accuracy(model, dataset.val)
    baseline_info = info.with_provenance(
        distilled=None, baseline_of=str(run_dir.parent / "model.keras"), val_accuracy=round(top1, 6), run=str(run_dir)
    )
    path = save_keras_model(model, run_dir / "model.keras", baseline_info)
    return {"top1": top1, "history": history, "model_path": str(path)}


def _result(
    config: DistillConfig,
    run_dir: Path,
    teacher: Any,
    student: Any,
    dataset: Any,
    history: dict[str, list[float]],
    baseline: dict[str, Any] | None,
    teacher_top1: float,
    student_top1: float,
) -> DistillResult:
    import keras

    from edgecls.modelstats import count_params_and_macs
    from edgecls.plots import plot_distill_curves

    baseline_history = baseline["history"] if baseline else None
    curves = plot_distill_curves(history, baseline_history, teacher_top1, run_dir / "curves.png")
    write_json(run_dir / "history.json", {"distilled": history, "baseline": baseline_history})
    (teacher_params, teacher_macs), (student_params, student_macs) = (
        count_params_and_macs(teacher),
        count_params_and_macs(student),
    )
    accuracies = history.get("val_accuracy") or [student_top1]
    baseline_accuracies = (baseline_history or {}).get("val_accuracy") or []
    return DistillResult(
        model_path=str(run_dir / "model.keras"),
        run_dir=str(run_dir),
        report_path=str(run_dir / REPORT_NAME),
        curves_png=str(curves),
        teacher_top1=teacher_top1,
        student_top1=student_top1,
        baseline_top1=baseline["top1"] if baseline else None,
        teacher_params=teacher_params,
        teacher_macs=teacher_macs,
        student_params=student_params,
        student_macs=student_macs,
        data=dataset.name,
        n_train=len(dataset.train),
        n_val=len(dataset.val),
        evaluated_with=f"keras {keras.__version__}, {describe_device()} of this host, on the teacher's held-out split",
        epochs_run=len(accuracies),
        best_epoch=best_epoch(history),
        baseline_best_epoch=best_epoch(baseline_history) if baseline_accuracies else None,
        baseline_model_path=baseline["model_path"] if baseline else None,
        teacher_path=str(config.teacher),
        student_source=config.student,
        temperature=config.temperature,
        kd_weight=config.kd_weight,
        feature_layers=[list(pair) for pair in config.feature_layers],
        device=describe_device(),
    )


def _load(path: str | Path) -> Any:
    from edgecls.keras_io import load_keras_model

    return load_keras_model(path)


def parse_feature_layers(text: str) -> tuple[tuple[str, str], ...]:
    """``"conv3:conv3,fc:fc"`` → ``(("conv3", "conv3"), ("fc", "fc"))`` (teacher layer, student layer)."""
    pairs = []
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        teacher_layer, colon, student_layer = part.partition(":")
        if not colon or not teacher_layer.strip() or not student_layer.strip():
            raise ConfigError(f"--feature-layers: {part!r} is not TEACHER_LAYER:STUDENT_LAYER (e.g. conv3:conv3)")
        pairs.append((teacher_layer.strip(), student_layer.strip()))
    return tuple(pairs)


def check_compatible(
    teacher: Any,
    student: Any,
    teacher_info: ModelInfo,
    student_info: ModelInfo,
    *,
    feature_layers: Sequence[tuple[str, str]] = (),
) -> None:
    """Raise ``ModelError`` naming what differs: classes, input size, channels, feature shapes."""
    teacher_classes, student_classes = int(teacher.output_shape[-1]), int(student.output_shape[-1])
    if teacher_classes != student_classes:
        raise ModelError(
            f"classes differ: the teacher predicts {teacher_classes} classes, the student {student_classes}; "
            "distil into a student built for the teacher's labels (pass a registry name as --student)"
        )
    if tuple(teacher_info.labels) != tuple(student_info.labels):
        raise ModelError(
            f"classes differ: teacher labels {list(teacher_info.labels)[:6]}…, student labels "
            f"{list(student_info.labels)[:6]}…; the teacher's output i must mean the student's output i"
        )
    teacher_shape, student_shape = tuple(teacher.input_shape[1:]), tuple(student.input_shape[1:])
    if teacher_shape[:2] != student_shape[:2]:
        raise ModelError(
            f"input size differs: the teacher takes {teacher_shape[0]}x{teacher_shape[1]} pixels, the student "
            f"{student_shape[0]}x{student_shape[1]}; both must see the same images: build the student at the teacher's "
            "size"
        )
    if teacher_shape[2] != student_shape[2] or teacher_info.channel_order != student_info.channel_order:
        raise ModelError(
            f"channels differ: the teacher takes {teacher_shape[2]} ({teacher_info.channel_order}), the student "
            f"{student_shape[2]} ({student_info.channel_order})"
        )
    for teacher_layer, student_layer in feature_layers:
        shapes = []
        for role, model, name in (("teacher", teacher, teacher_layer), ("student", student, student_layer)):
            try:
                shapes.append(tuple(model.get_layer(name).output.shape[1:]))
            except ValueError:
                raise ModelError(f"--feature-layers: the {role} has no layer {name!r}") from None
        if shapes[0] != shapes[1]:
            raise ModelError(
                f"--feature-layers {teacher_layer}:{student_layer}: output shapes differ (teacher {shapes[0]}, student "
                f"{shapes[1]}); feature distillation (MSE) needs layers of equal output shape"
            )


def student_info(config: DistillConfig, student: Any, teacher_info: ModelInfo) -> ModelInfo:
    """The student's labels and input contract.

    Its file's metadata, or the teacher's for a registry student (built from it).
    """
    from edgecls.runtime.metadata import read_model_info

    if not config.student_is_file:
        return teacher_info
    own = read_model_info(config.student)
    if own is not None:
        return own
    # No metadata (a model not saved by edgecls): its graph gives the input; class names cannot be compared.
    _, height, width, channels = student.input_shape
    order = teacher_info.channel_order if channels == teacher_info.channels else ("GRAY" if channels == 1 else "RGB")
    return ModelInfo(teacher_info.labels, (int(height), int(width)), int(channels), order)


def build_student(config: DistillConfig, teacher_info: ModelInfo) -> Any:
    """The registry model built for the teacher's labels and input, or the ``.keras`` file.

    Seeded by ``config.seed``.
    """
    import keras

    from edgecls.keras_io import load_keras_model
    from edgecls.models import build_model

    keras.utils.set_random_seed(config.seed)  # the baseline starts from the very same weights
    if config.student_is_file:
        return load_keras_model(config.student)
    return build_model(
        config.student,
        num_classes=len(teacher_info.labels),
        image_size=tuple(teacher_info.input_size),
        channels=teacher_info.channels,
        alpha=1.0 if config.alpha is None else config.alpha,
    )


def _student_metadata(
    config: DistillConfig,
    teacher_info: ModelInfo,
    own_info: ModelInfo,
    dataset: Any,
    student_top1: float,
    teacher_top1: float,
    run_dir: Path,
) -> ModelInfo:
    """The teacher's contract (labels, input) with the student's own history (e.g. ``pruned``) and this distillation."""
    provenance = {
        **own_info.provenance,
        "source_model": config.student,
        "dataset": dataset.name,
        "split": dataset.split,
        "n_train": len(dataset.train),
        "n_val": len(dataset.val),
        "val_accuracy": round(student_top1, 6),
        "run": str(run_dir),
        "precision": "fp32",
        "distilled": {
            "teacher": str(config.teacher),
            "teacher_top1": round(teacher_top1, 6),
            "temperature": config.temperature,
            "kd_weight": config.kd_weight,
            "feature_layers": [list(pair) for pair in config.feature_layers],
        },
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return ModelInfo(
        teacher_info.labels,
        teacher_info.input_size,
        teacher_info.channels,
        teacher_info.channel_order,
        teacher_info.pixel_range,
        provenance,
    )


def _refuse_overwrite(run_dir: Path, config: DistillConfig) -> None:
    output = (run_dir / "model.keras").resolve()
    for role, path in (("teacher", config.teacher), ("student", config.student if config.student_is_file else None)):
        if path and Path(path).resolve() in (output, (run_dir / "baseline" / "model.keras").resolve()):
            raise ConfigError(
                f"--out {run_dir} would overwrite the {role} {path}; distillation never overwrites its inputs: choose "
                "another --out"
            )


def interrupted(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a distillation (or its baseline) that was stopped before it finished."""
    return bool(_backups(Path(run_dir)))


def _backups(run_dir: Path) -> list[Path]:
    return [path for path in (run_dir / "backup", run_dir / "baseline" / "backup") if path.exists()]


def _phase_done(run_dir: Path) -> bool:
    """A phase finished when its model was saved and its backup removed (``BackupAndRestore`` deletes it at the end)."""
    return (run_dir / "model.keras").exists() and not (run_dir / "backup").exists()
