"""The library configuration each stage runs with, built from its TOML table, and resolved for its key.

One builder per stage that takes a library config (train, prune, distill, quantize, bench): the stage calls it to
run, and ``resolved_options`` calls it to say, before anything runs, everything that decides the stage's output:
the options the file wrote *and* the defaults they resolved to (epochs, learning rate, starting weights, fine-tune
epochs, the target profile's settings). A changed default therefore changes the stage's key (``keys.stage_key``)
and re-runs it, where the file alone would have looked unchanged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgecls.pipeline.config import PipelineConfig, stage_options

KERAS_STAGES = ("train", "prune", "distill")
# Fields that say where a stage writes or whether it resumes: not what it computes.
NOT_IN_KEY = ("out", "resume")


def train_config(config: PipelineConfig, options: dict[str, Any], stage_dir: Path, *, resume: bool = False):
    from edgecls.train import TrainConfig

    if isinstance(options.get("weights"), str) and options["weights"].lower() not in ("imagenet", "none"):
        options = {**options, "weights": config.resolve(options["weights"])}  # a file beside the pipeline file
    for name in ("init_from", "replay"):  # the deployed model and its original data, beside the pipeline file
        if isinstance(options.get(name), str):
            options = {**options, name: config.resolve(options[name])}
    return stage_options(
        TrainConfig,
        options,
        stage="train",
        source=config.source,
        data=config.resolve(config.data),
        seed=config.seed,
        out=str(stage_dir),
        resume=resume,
    )


def prune_config(config: PipelineConfig, options: dict[str, Any], stage_dir: Path):
    from edgecls.prune import PruneConfig

    return stage_options(
        PruneConfig,
        options,
        stage="prune",
        source=config.source,
        data=config.resolve(config.data),
        seed=config.seed,
        out=str(stage_dir / "model.keras"),
    )


def distill_config(
    config: PipelineConfig,
    options: dict[str, Any],
    stage_dir: Path,
    summaries: dict[str, dict[str, Any]],
    *,
    resume: bool = False,
):
    """The distillation: teacher the trained model; student a registry name, a file, or by default the pruned
    model when there is one."""
    from edgecls.distill import DistillConfig

    options = dict(options)
    student = options.pop("student", None)
    if student is None:
        student = summaries["prune"]["model"] if "prune" in summaries else "cnn"
    elif student.endswith(".keras"):
        student = config.resolve(student)
    return stage_options(
        DistillConfig,
        options,
        stage="distill",
        source=config.source,
        teacher=summaries["train"]["model"],
        student=student,
        data=config.resolve(config.data),
        seed=config.seed,
        out=str(stage_dir),
        resume=resume,
    )


COMPARE_RUNS, COMPARE_WARMUP = 100, 10  # [compare] with a target: each latency's runs and warm-up

INT8_ONLY = ("calib", "io", "method", "per_channel", "calib_size", "formats", "qat", "qat_epochs", "qat_lr")


def quantize_configs(config: PipelineConfig, options: dict[str, Any], stage_dir: Path) -> list[Any]:
    """One ``QuantizeConfig`` per precision of ``[quantize] precisions`` (default int8)."""
    from edgecls.quantize import QuantizeConfig

    options = dict(options)
    precisions = options.pop("precisions", ["int8"])
    if "calib" in options:
        options["calib"] = config.resolve(str(options["calib"]))
    configs = []
    for precision in precisions:
        fixed = {
            "precision": precision,
            "seed": config.seed,
            "out": str(stage_dir / precision),
            "eval_data": config.resolve(config.data),
            # [quantize] qat = true trains on the pipeline's data (its training split; eval_data scores its held-out)
            "qat_data": config.resolve(config.data) if options.get("qat") and precision == "int8" else None,
        }
        chosen = {k: v for k, v in options.items() if not (precision == "fp16" and k in INT8_ONLY)}
        configs.append(stage_options(QuantizeConfig, chosen, stage="quantize", source=config.source, **fixed))
    return configs


def bench_configs(
    config: PipelineConfig, options: dict[str, Any], stage_dir: Path, models: tuple[str, ...]
) -> list[Any]:
    """One ``BenchConfig`` per target of ``[bench] targets`` (default host)."""
    from edgecls.bench import BenchConfig

    options = dict(options)
    targets = options.pop("targets", ["host"])
    configs = []
    for target in targets:
        target = config.resolve_target(target)  # a target file beside the pipeline file
        configs.append(
            stage_options(
                BenchConfig,
                options,
                stage="bench",
                source=config.source,
                models=models,
                target=target,
                data=config.resolve(config.data),
                out=str(stage_dir / target),
            )
        )
    return configs


def upstream_models(summaries: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """Every ``.tflite``/``.onnx`` artifact the stages so far made: what [bench] measures."""
    return tuple(
        row["path"]
        for summary in summaries.values()
        for row in summary.get("artifacts", [])
        if row["format"] in ("tflite", "onnx")
    )


def resolved_options(
    config: PipelineConfig, name: str, options: dict[str, Any], summaries: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Everything of the stage's configuration that decides its output, defaults filled in (JSON-ready)."""
    scratch = Path(".")  # where a stage writes is not part of what it computes (NOT_IN_KEY)
    if name == "train":
        from edgecls.train import resolve_train_config

        return _plain(resolve_train_config(train_config(config, options, scratch)))
    if name == "prune":
        pruning = prune_config(config, options, scratch)
        return {**_plain(pruning), "finetune_epochs": pruning.epochs_to_finetune()}
    if name == "distill" and "train" in summaries:
        return _plain(distill_config(config, options, scratch, summaries))
    if name == "quantize":
        return {"precisions": [_plain(each) for each in quantize_configs(config, options, scratch)]}
    if name == "export":
        from edgecls.export import FORMATS

        return {"formats": list(options.get("formats", FORMATS))}
    if name == "robustness":
        from edgecls.runtime.corruptions import SEVERITIES, list_corruptions

        return {
            "severities": list(options.get("severities", SEVERITIES)),
            "corruptions": list(options.get("corruptions", list_corruptions())),
        }
    if name == "bench":
        from edgecls.runtime.targets import get_target

        resolved = []
        for bench in bench_configs(config, options, scratch, upstream_models(summaries)):
            resolved.append({**_plain(bench), "profile": dataclasses.asdict(get_target(bench.target))})
        return {"targets": resolved}
    return {"runs": COMPARE_RUNS, "warmup": COMPARE_WARMUP, **options}  # compare: its options, timing defaults filled


def _plain(options: Any) -> dict[str, Any]:
    return {key: value for key, value in dataclasses.asdict(options).items() if key not in NOT_IN_KEY}
