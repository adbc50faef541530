"""``edgecls distill``: a teacher's softened outputs train an edge-sized student.

Built on ``keras.distillation``: a ``Distiller`` over the *logits* of both
models (every edgecls model ends in ``Dense("logits")`` → ``softmax("probs")``;
the Distiller sees logits sub-models that share the layers, so training it
trains the full student), ``LogitsDistillation`` for the outputs and, for
matched intermediate layers, ``FeatureDistillation``. Training goes through
``edgecls.train.fit`` like every stage: cosine schedule, best epoch kept,
checkpoints and ``--resume``, TensorBoard, ``runs/NAME/``. The Keras part, in
memory, is ``edgecls.train.distillation``; this module is the stage around it.

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
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError
from edgecls.base.fileio import write_json
from edgecls.distill.config import REPORT_NAME, DistillConfig, DistillResult
from edgecls.distill.student import build_student, check_compatible, student_info, student_metadata
from edgecls.evaluate import top1_accuracy
from edgecls.runtime.metadata import ModelInfo
from edgecls.train.distillation import distill_model
from edgecls.train.fit import FitOptions, best_epoch, read_history
from edgecls.train.runs import describe_device, resolve_resume, write_run_files

log = logging.getLogger(__name__)


def distill(config: DistillConfig, *, callbacks: Sequence[Any] = ()) -> DistillResult:
    """Distil ``config.teacher`` into ``config.student``; write ``runs/NAME/``.

    Writes ``model.keras`` (the distilled student: the full softmax model, with
    edgecls metadata), ``distill.json``, ``history.json``, ``curves.png``,
    ``config.json``, ``split.json`` and, with ``baseline``,
    ``baseline/model.keras``. Nothing is written before the teacher, the
    student and the data have been checked against each other.
    """
    from edgecls.adapters.keras_io import save_keras_model

    started = time.time()
    config.check()
    run_dir = config.run_dir()
    config = resolve_resume(config, run_dir, backups=_backups(run_dir), what="distillation")
    teacher, teacher_info, student, dataset = _checked_inputs(config, run_dir)
    write_run_files(run_dir, config, dataset)
    fit_options = config.fit_options(config.data or teacher_info.provenance.get("dataset", ""))
    model_path = run_dir / "model.keras"
    # a trained student (a pruned and fine-tuned .keras): distillation must not leave it worse than it came
    given = (student.get_weights(), top1_accuracy(student, dataset.val)) if config.student_is_file else None
    if config.resume and _phase_done(run_dir):
        log.info("%s: the distillation had finished before the interruption; keeping it", model_path)
        student, history = _load(model_path), read_history(run_dir)
    else:
        history = distill_model(
            teacher, student, dataset, options=fit_options, loss=config.loss(), run_dir=run_dir, callbacks=callbacks
        )
    teacher_top1, student_top1 = top1_accuracy(teacher, dataset.val), top1_accuracy(student, dataset.val)
    info = student_metadata(
        config, teacher_info, student_info(config, student, teacher_info), dataset, student_top1, teacher_top1, run_dir
    )
    save_keras_model(student, model_path, info)

    baseline = None
    if config.baseline:
        baseline = _baseline(config, teacher_info, dataset, info, run_dir / "baseline", fit_options, callbacks)
        log.info(
            "top-1: teacher %.4f, student alone %.4f, distilled %.4f", teacher_top1, baseline["top1"], student_top1
        )
    distilled_top1 = student_top1
    kept, student_top1 = _keep_better(student, student_top1, given, baseline)
    if kept != "distilled":
        message = (
            f"distillation ended at {distilled_top1:.2%} held-out top-1, below {kept} ({student_top1:.2%}): "
            f"{model_path} holds {kept}"
        )
        log.warning("%s", message)
        info = info.with_provenance(val_accuracy=round(student_top1, 6), kept=kept)
        save_keras_model(student, model_path, info)
    result = _result(config, run_dir, teacher, student, dataset, history, baseline, teacher_top1, student_top1)
    result.kept, result.distilled_top1, result.given_top1 = kept, distilled_top1, given[1] if given else None
    if kept != "distilled":
        result.warnings.append(message)
    result.seconds = round(time.time() - started, 2)
    write_json(result.report_path, result.to_dict())
    return result


def _keep_better(
    student: Any,
    distilled_top1: float,
    given: tuple[list[Any], float] | None,
    baseline: dict[str, Any] | None,
) -> tuple[str, float]:
    """Which of the distilled student, the student as it was given and the one trained alone (``--baseline``) scored
    best on the held-out split (the distilled one on a tie); ``student`` takes that one's weights."""
    kept, top1 = "distilled", distilled_top1
    if given is not None and given[1] > top1:
        kept, top1 = "the student as given", given[1]
        student.set_weights(given[0])
    if baseline is not None and baseline["top1"] > top1:
        kept, top1 = "the student trained alone (--baseline)", baseline["top1"]
        student.set_weights(_load(baseline["model_path"]).get_weights())
    return kept, top1


def _checked_inputs(config: DistillConfig, run_dir: Path) -> tuple[Any, ModelInfo, Any, Any]:
    """Teacher, its metadata, the student and the teacher's own split, checked against each other."""
    from edgecls.adapters.keras_io import model_info_from_keras
    from edgecls.evaluate import validation_set

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
    from edgecls.adapters.keras_io import save_keras_model
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

    from edgecls.base.plots import plot_distill_curves
    from edgecls.models.stats import count_params_and_macs

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
    from edgecls.adapters.keras_io import load_keras_model

    return load_keras_model(path)


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
