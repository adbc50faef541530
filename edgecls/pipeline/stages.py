"""One function per pipeline stage: build the stage's config, call the library, summarise.

Each takes ``(config, options, stage_dir, summaries, resuming)`` and returns a
JSON-ready summary whose ``artifacts`` rows feed the report. No stage has an
implementation of its own: they call what the commands call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError
from edgecls.pipeline import resolve
from edgecls.pipeline.checks import MODEL_SUFFIXES
from edgecls.pipeline.config import PipelineConfig
from edgecls.pipeline.resolve import KERAS_STAGES

log = logging.getLogger(__name__)

FIT_STAGES = (*KERAS_STAGES, "quantize")  # the stages that fit a Keras model (quantize: with qat), given callbacks


def keras_row(
    name: str, stage: str, path: str | Path, top1: float | None, *, params: int | None = None, macs: int | None = None
) -> dict[str, Any]:
    """A report row for a ``.keras`` model: its size, parameters and MACs (counted here when the stage did not)."""
    if params is None or macs is None:
        from edgecls.adapters.keras_io import load_keras_model
        from edgecls.models.stats import count_params_and_macs

        params, macs = count_params_and_macs(load_keras_model(path))
    return {
        "name": name,
        "stage": stage,
        "path": str(path),
        "format": "keras",
        "precision": "fp32",
        "params": params,
        "macs": macs,
        "size_bytes": Path(path).stat().st_size,
        "top1": top1,
    }


def latest_keras_model(summaries: dict[str, dict[str, Any]]) -> str:
    """The most compressed Keras model so far: distilled, else pruned, else trained."""
    for stage in reversed(KERAS_STAGES):
        if stage in summaries:
            return summaries[stage]["model"]
    raise ConfigError("no Keras model yet: the pipeline needs [train] first")


def train(
    config: PipelineConfig,
    options: dict[str, Any],
    stage_dir: Path,
    summaries: dict,
    resuming: bool,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    from edgecls.train import train as train_model

    resume = resuming and (stage_dir / "backup").is_dir()
    train_config = resolve.train_config(config, options, stage_dir, resume=resume)
    result = train_model(train_config, callbacks=callbacks)
    # a retrained model is validated on the new split and the replayed one together; its report row scores
    # the pipeline's data, as every later stage (quantize, robustness) does, so Δ top-1 compares like with like
    top1 = result.validation["new"]["top1"] if result.validation else result.val_accuracy
    return {
        "model": str(result.model_path),
        "val_accuracy": result.val_accuracy,
        "curves": str(stage_dir / "curves.png"),
        "weights": result.weights,
        "phase_epochs": result.phase_epochs,
        "warnings": result.warnings,
        "artifacts": [keras_row("FP32 Keras", "train", result.model_path, top1)],
    }


def prune(
    config: PipelineConfig,
    options: dict[str, Any],
    stage_dir: Path,
    summaries: dict,
    resuming: bool,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    from edgecls.prune import prune as prune_model

    prune_config = resolve.prune_config(config, options, stage_dir)
    result = prune_model(summaries["train"]["model"], prune_config, callbacks=callbacks)
    return {
        "model": result.model_path,
        "macs_before": result.macs_before,
        "macs_after": result.macs_after,
        "latency_ms_before": result.latency_ms_before,
        "latency_ms_after": result.latency_ms_after,
        "artifacts": [
            keras_row(
                "pruned Keras",
                "prune",
                result.model_path,
                result.top1_after,
                params=result.params_after,
                macs=result.macs_after,
            )
        ],
    }


# distill keeps the better of the distilled student, the student as given and the one trained alone: the row says
# which the stage's model file holds (its name prefixes the quantized rows made from it).
KEPT_ROW_NAMES = {
    "the student as given": "undistilled student",
    "the student trained alone (--baseline)": "student alone",
}


def distill(
    config: PipelineConfig,
    options: dict[str, Any],
    stage_dir: Path,
    summaries: dict,
    resuming: bool,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    from edgecls.distill import distill as distill_model
    from edgecls.distill import interrupted

    resume = resuming and interrupted(stage_dir)  # the distillation's own fit, or its --baseline one
    distill_config = resolve.distill_config(config, options, stage_dir, summaries, resume=resume)
    result = distill_model(distill_config, callbacks=callbacks)
    return {
        "model": str(result.model_path),
        "teacher_top1": result.teacher_top1,
        "student_top1": result.student_top1,
        "kept": result.kept,
        "distilled_top1": result.distilled_top1,
        "warnings": list(result.warnings),  # the report lists them: a distillation that lost to its student
        "artifacts": [
            keras_row(
                f"{KEPT_ROW_NAMES.get(result.kept, 'distilled')} Keras",  # what the file holds
                "distill",
                result.model_path,
                result.student_top1,
                params=result.student_params,
                macs=result.student_macs,
            )
        ],
    }


def quantize(
    config: PipelineConfig,
    options: dict[str, Any],
    stage_dir: Path,
    summaries: dict,
    resuming: bool,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    from edgecls.quantize import quantize as quantize_model

    source = latest_keras_model(summaries)
    source_row = next(
        summary["artifacts"][0] for stage, summary in reversed(list(summaries.items())) if stage in KERAS_STAGES
    )
    prefix = source_row["name"].replace(" Keras", "").replace("FP32", "").strip()
    rows, reports = [], []
    for quantize_config in resolve.quantize_configs(config, options, stage_dir):
        result = quantize_model(
            source,
            quantize_config,
            callbacks=callbacks,  # [quantize] qat = true: its fine-tuning's epochs
        )
        reports.append(result.report_json)
        for artifact in result.artifacts:
            rows.append(
                {
                    "name": f"{prefix} {artifact.precision.upper()} {artifact.format}".strip(),
                    "stage": "quantize",
                    "path": artifact.path,
                    "format": artifact.format,
                    "precision": artifact.precision,
                    "params": source_row["params"],
                    "macs": source_row["macs"],
                    "size_bytes": artifact.size_bytes,
                    "top1": artifact.top1,
                    "float_layers": artifact.float_layers,
                    "qat": bool(result.qat),
                    "ptq_top1": artifact.ptq_top1,  # with qat: plain post-training INT8 beside it
                }
            )
    return {"source": source, "reports": reports, "artifacts": rows}


def export(
    config: PipelineConfig, options: dict[str, Any], stage_dir: Path, summaries: dict, resuming: bool
) -> dict[str, Any]:
    from edgecls.export import FORMATS
    from edgecls.export import export as export_model

    formats = tuple(options.get("formats", FORMATS))
    rows = []
    for stage in KERAS_STAGES:
        if stage not in summaries:
            continue
        result = export_model(summaries[stage]["model"], formats=formats, out_dir=stage_dir / stage)
        keras = summaries[stage]["artifacts"][0]
        for artifact in result.artifacts:
            rows.append(
                {
                    "name": f"{keras['name'].replace(' Keras', '')} FP32 {artifact.format}".replace(
                        "FP32 FP32", "FP32"
                    ),
                    "stage": stage,
                    "path": artifact.path,
                    "format": artifact.format,
                    "precision": "fp32",
                    "params": keras["params"],
                    "macs": keras["macs"],
                    "size_bytes": artifact.size_bytes,
                    "top1": keras["top1"],
                    "parity_top1": artifact.parity_top1,
                }
            )
    return {"artifacts": rows}


def robustness(
    config: PipelineConfig, options: dict[str, Any], stage_dir: Path, summaries: dict, resuming: bool
) -> dict[str, Any]:
    """``edgecls evaluate --corruptions`` of every artifact so far: its mean corruption top-1 joins its report row."""
    from edgecls.evaluate.robustness import evaluate_corruptions
    from edgecls.runtime.corruptions import SEVERITIES

    rows = [row for summary in summaries.values() for row in summary.get("artifacts", [])]
    if not rows:
        raise ConfigError(f"{config.source}: [robustness] has nothing to score; it runs after the stages that train")
    models: dict[str, dict[str, Any]] = {}
    for index, row in enumerate(rows):
        result = evaluate_corruptions(
            row["path"],
            config.resolve(config.data),
            severities=tuple(options.get("severities", SEVERITIES)),
            corruptions=tuple(options["corruptions"]) if "corruptions" in options else None,
            seed=config.seed,
            out_dir=stage_dir / f"{index:02d}-{row['stage']}-{row['format']}-{row['precision']}",
        )
        models[row["path"]] = {
            "clean_top1": result.clean_top1,
            "mean_corruption_top1": result.mean_corruption_top1,
            "corruptions": result.corruptions,
        }
    return {"models": models, "artifacts": []}


def bench(
    config: PipelineConfig, options: dict[str, Any], stage_dir: Path, summaries: dict, resuming: bool
) -> dict[str, Any]:
    from edgecls.bench import bench as bench_models
    from edgecls.bench.report import plot_latency
    from edgecls.pipeline.labels import artifact_labels

    rows = [
        row
        for summary in summaries.values()
        for row in summary.get("artifacts", [])
        if row["format"] in ("tflite", "onnx")
    ]
    models = resolve.upstream_models(summaries)
    labels = artifact_labels(rows)
    if not models:
        raise ConfigError(f"{config.source}: [bench] has nothing to measure; add [export] or [quantize] before it")
    results: dict[str, dict[str, Any]] = {}
    for bench_config in resolve.bench_configs(config, options, stage_dir, models):
        target = bench_config.target
        report = bench_models(bench_config)
        if report.plot_path:  # three stages each export a model_fp32.tflite: name them as the report table does
            plot_latency(report.run, Path(report.plot_path), labels=labels)
        results[target] = {
            "where": report.run.where,
            "plot": report.plot_path,
            "markdown": report.markdown_path,
            "models": {
                result.model: {
                    "p50": result.latency_ms.p50,
                    "p99": result.latency_ms.p99,
                    "fps": result.fps,
                    "top1": result.top1,
                    "engine": f"{result.engine} {result.engine_version}",
                    "provider": result.provider,
                    "threads": result.threads,
                    "where": result.where,
                    "on_target": result.on_target,  # measured on the device itself, not here with its settings
                    "throttled": result.throttled,
                    "samples_ms": result.samples_ms,
                }
                for result in report.run.results
            },
        }
    return {"targets": results, "artifacts": []}


def compare(
    config: PipelineConfig, options: dict[str, Any], stage_dir: Path, summaries: dict, resuming: bool
) -> dict[str, Any]:
    """``edgecls compare A B`` with A the model deployed today and B this run's candidate (by default the
    artifact the report calls deployed: INT8 TFLite, else the smallest TFLite, else the last Keras model)."""
    from edgecls.evaluate.compare import compare as compare_models
    from edgecls.evaluate.compare import result_path
    from edgecls.pipeline.candidate import deployed_artifact, quantize_max_drop
    from edgecls.pipeline.labels import artifact_labels
    from edgecls.pipeline.report import collect_rows

    rows, _ = collect_rows(summaries)  # with each target's latency: the deployed candidate is the fastest in budget
    model_a = config.resolve(options["a"])
    model_b, b_name = _compare_b(config, options.get("b"), rows)
    if model_b is None:
        deployed = deployed_artifact(rows, max_drop=quantize_max_drop(config))
        if deployed is not None:
            model_b, b_name = deployed["path"], artifact_labels(rows)[deployed["path"]]
        else:
            model_b, b_name = latest_keras_model(summaries), "the last Keras model"
    result = compare_models(
        model_a,
        model_b,
        config.resolve(options.get("data", config.data)),
        target=config.resolve_target(options["target"]) if "target" in options else None,
        runs=int(options.get("runs", resolve.COMPARE_RUNS)),
        warmup=int(options.get("warmup", resolve.COMPARE_WARMUP)),
        out_dir=stage_dir,
    )
    return {
        "a": result.a,
        "b": {**result.b, "name": b_name},
        "data": result.data,
        "n_images": result.n_images,
        "a_only_correct": result.a_only_correct,
        "b_only_correct": result.b_only_correct,
        "mcnemar_p": result.mcnemar_p,
        "verdict": result.verdict,
        "per_class": result.per_class,
        "latency": result.latency,
        "notes": result.notes,
        "json": str(result_path(stage_dir, model_a, model_b)),
        "artifacts": [],
    }


def _compare_b(config: PipelineConfig, b: str | None, rows: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """[compare] b: a model file, or one of the report's artifact names (as the report table shows them)."""
    from edgecls.pipeline.labels import artifact_labels

    if b is None:
        return None, None
    if b.endswith(MODEL_SUFFIXES):
        return config.resolve(b), b
    labels = artifact_labels(rows)
    by_name = {label.lower(): path for path, label in labels.items()}
    by_name.update({row["name"].lower(): row["path"] for row in rows if row["name"].lower() not in by_name})
    if b.lower() not in by_name:
        raise ConfigError(
            f"{config.source}: [compare] b = {b!r} is neither a model file nor an artifact of this run; "
            f"its artifacts: {', '.join(labels.values())}"
        )
    return by_name[b.lower()], b
