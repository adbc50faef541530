"""The student: built or loaded, checked against its teacher, and the metadata it leaves with."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError, ModelError
from edgecls.distill.config import DistillConfig
from edgecls.runtime.metadata import ModelInfo


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

    from edgecls.adapters.keras_io import load_keras_model
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


def student_metadata(
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
