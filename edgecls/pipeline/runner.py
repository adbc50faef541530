"""Run the stages in order, each only when its inputs or options changed.

Each stage writes into ``runs/NAME/<stage>/``. Before it starts, the stage's
key (its options, the previous stage's key, the digest of any input folder it
reads, the edgecls version) goes into ``started.json``; when it finishes, its
summary goes into ``stage.json`` with the same key. A stage whose
``stage.json`` carries the current key, and whose artifacts all exist, is
skipped. A stage that was interrupted (``started.json`` with the current key,
no ``stage.json``) resumes: training stages continue from their last
completed epoch. A stage whose key changed starts from an empty folder. Keys
chain, so a change re-runs everything downstream of it and nothing upstream.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError, EdgeclsError
from edgecls.base.fileio import folder_digest, write_json
from edgecls.pipeline import stages as stage_functions
from edgecls.pipeline.checks import check_options
from edgecls.pipeline.config import STAGES, PipelineConfig

log = logging.getLogger(__name__)


@dataclass
class StageOutcome:
    stage: str
    status: str  # ran | skipped | resumed | failed
    seconds: float
    key: str
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineResult:
    name: str
    run_dir: str
    stages: list[StageOutcome]
    report_md: str | None
    report_json: str | None
    seconds: float
    failed: str | None = None  # the stage that failed, with its message


StageFunction = Callable[[PipelineConfig, dict[str, Any], Path, dict[str, dict[str, Any]], bool], dict[str, Any]]
STAGE_FUNCTIONS: dict[str, StageFunction] = {name: getattr(stage_functions, name) for name in STAGES}


def run_pipeline(
    config: PipelineConfig,
    *,
    from_stage: str | None = None,
    until_stage: str | None = None,
    on_stage: Callable[[str, str], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> PipelineResult:
    """Run ``config``'s stages; write ``runs/NAME/report.md`` and ``report.json``.

    ``from_stage`` re-runs that stage (and so everything after it) even when
    nothing changed; ``until_stage`` stops after that stage. ``callbacks``
    (Keras callbacks, e.g. a progress bar) go to every fit of the Keras stages:
    training, pruning's fine-tuning, distillation, quantize's QAT.

    >>> run_pipeline(load_pipeline_config("examples/digits.toml")).report_md  # doctest: +SKIP
    'runs/digits/report.md'
    """
    started = time.time()
    for name, value in (("--from", from_stage), ("--until", until_stage)):
        if value is not None and value not in config.stages:
            raise ConfigError(f"{name} {value}: not a stage of {config.source}; its stages: {', '.join(config.stages)}")
    check_options(config)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, dict[str, Any]] = {}
    outcomes: list[StageOutcome] = []
    previous_key = ""
    forced = False
    failed = None
    for name, options in config.stages.items():
        forced = forced or name == from_stage
        key = stage_key(config, name, options, previous_key)
        stage_dir = config.run_dir / name
        begun = time.time()
        done = _finished_summary(stage_dir, key)
        if done is not None and not forced:
            outcomes.append(StageOutcome(name, "skipped", 0.0, key, done))
            summaries[name] = done
            _notify(on_stage, name, "skipped (inputs and options unchanged)")
        else:
            resuming = _started_key(stage_dir) == key and not forced
            if not resuming and stage_dir.exists():
                shutil.rmtree(stage_dir)
            stage_dir.mkdir(parents=True, exist_ok=True)
            write_json(
                stage_dir / "started.json",
                {"key": key, "options": options, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
            )
            _notify(on_stage, name, "resuming" if resuming else "running")
            try:
                extra = {"callbacks": callbacks} if name in stage_functions.FIT_STAGES else {}
                summary = STAGE_FUNCTIONS[name](config, options, stage_dir, summaries, resuming, **extra)
            except EdgeclsError as exc:
                failed = f"{name}: {exc}"
                outcomes.append(StageOutcome(name, "failed", round(time.time() - begun, 2), key, {"error": str(exc)}))
                _notify(on_stage, name, f"failed: {exc}")
                break
            write_json(
                stage_dir / "stage.json", {"key": key, "summary": summary, "seconds": round(time.time() - begun, 2)}
            )
            outcomes.append(
                StageOutcome(name, "resumed" if resuming else "ran", round(time.time() - begun, 2), key, summary)
            )
            summaries[name] = summary
        previous_key = key
        if name == until_stage:
            break
    from edgecls.pipeline.report import write_report

    report = write_report(config, summaries) if summaries else None
    return PipelineResult(
        config.name,
        str(config.run_dir),
        outcomes,
        report and str(report["markdown"]),
        report and str(report["json"]),
        round(time.time() - started, 2),
        failed,
    )


def stage_key(config: PipelineConfig, name: str, options: dict[str, Any], previous_key: str) -> str:
    from edgecls import __version__

    inputs = {"data": folder_digest(config.resolve(config.data))} if name in ("train",) else {}
    for stage, option in (
        ("quantize", "calib"),
        ("train", "weights"),
        ("train", "init_from"),
        ("train", "replay"),
        ("distill", "student"),
        ("compare", "a"),  # the deployed model: a replaced one re-runs the comparison
        ("compare", "b"),  # a file (a report row's name is its own digest)
        ("compare", "data"),
    ):
        if (
            name == stage
            and isinstance(options.get(option), str)
            and options[option].lower() not in ("imagenet", "none")
        ):
            # a folder or file: a changed one re-runs the stage
            inputs[option] = folder_digest(config.resolve(options[option]))
    document = {
        "stage": name,
        "options": options,
        "previous": previous_key,
        "inputs": inputs,
        "data": config.data,
        "seed": config.seed,
        "edgecls": __version__,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished_summary(stage_dir: Path, key: str) -> dict[str, Any] | None:
    marker = stage_dir / "stage.json"
    if not marker.is_file():
        return None
    document = json.loads(marker.read_text())
    if document.get("key") != key:
        return None
    summary = document.get("summary", {})
    if not all(Path(a["path"]).exists() for a in summary.get("artifacts", [])):
        return None
    return summary


def _started_key(stage_dir: Path) -> str | None:
    marker = stage_dir / "started.json"
    return json.loads(marker.read_text()).get("key") if marker.is_file() else None


def _notify(on_stage: Callable[[str, str], None] | None, name: str, status: str) -> None:
    log.info("%s: %s", name, status)
    if on_stage is not None:
        on_stage(name, status)
