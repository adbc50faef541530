"""Run the stages in order, each only when something that decides its output changed.

Each stage writes into ``runs/NAME/<stage>/``. Before it starts, the stage's key (``keys.stage_key``: its
resolved configuration, the content of its inputs, the code, the previous stage's key) goes into
``started.json``; when it finishes, its summary goes into ``stage.json`` with the same key and the time. A stage
whose ``stage.json`` carries the current key, and whose artifacts all exist, is reused, and the log and the report
say from when. A stage that was interrupted (``started.json`` with the current key, no ``stage.json``) resumes:
training stages continue from their last completed epoch. A stage whose key changed starts from an empty folder.
``--from STAGE`` re-runs that stage and everything after it; ``--force STAGE`` re-runs that stage alone (a stage
after it re-runs too when the new output differs, as its inputs' digests then do).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError, EdgeclsError
from edgecls.base.fileio import write_json
from edgecls.pipeline import stages as stage_functions
from edgecls.pipeline.checks import check_options
from edgecls.pipeline.config import STAGES, PipelineConfig
from edgecls.pipeline.keys import DIGESTS_FILE, ContentDigests, stage_inputs, stage_key
from edgecls.pipeline.resolve import resolved_options

log = logging.getLogger(__name__)


@dataclass
class StageOutcome:
    stage: str
    status: str  # ran | reused | resumed | failed
    seconds: float
    key: str
    summary: dict[str, Any] = field(default_factory=dict)
    reused_from: str | None = None  # a reused stage: when the run it comes from finished it


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
    force: Sequence[str] = (),
) -> PipelineResult:
    """Run ``config``'s stages; write ``runs/NAME/report.md`` and ``report.json``.

    ``from_stage`` re-runs that stage (and so everything after it) even when
    nothing changed; ``force`` re-runs those stages alone; ``until_stage`` stops after that stage. ``callbacks``
    (Keras callbacks, e.g. a progress bar) go to every fit of the Keras stages:
    training, pruning's fine-tuning, distillation, quantize's QAT.

    >>> run_pipeline(load_pipeline_config("examples/digits.toml")).report_md  # doctest: +SKIP
    'runs/digits/report.md'
    """
    started = time.time()
    for name, value in (("--from", from_stage), ("--until", until_stage), *(("--force", f) for f in force)):
        if value is not None and value not in config.stages:
            raise ConfigError(f"{name} {value}: not a stage of {config.source}; its stages: {', '.join(config.stages)}")
    check_options(config)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, dict[str, Any]] = {}
    outcomes: list[StageOutcome] = []
    previous_key = ""
    from_reached = False
    failed = None
    digests = ContentDigests(config.run_dir / DIGESTS_FILE)
    for name, options in config.stages.items():
        from_reached = from_reached or name == from_stage
        forced = from_reached or name in force
        resolved = resolved_options(config, name, options, summaries)
        key = stage_key(name, resolved, stage_inputs(config, name, options, summaries, digests), previous_key)
        digests.save()
        stage_dir = config.run_dir / name
        begun = time.time()
        done = _finished(stage_dir, key)
        if done is not None and not forced:
            summary, finished_at = done
            outcomes.append(StageOutcome(name, "reused", 0.0, key, summary, reused_from=finished_at))
            summaries[name] = summary
            _notify(on_stage, name, f"reused from {finished_at} (configuration, inputs and code unchanged)")
        else:
            resuming = _started_key(stage_dir) == key and not forced
            if not resuming and stage_dir.exists():
                shutil.rmtree(stage_dir)
            stage_dir.mkdir(parents=True, exist_ok=True)
            write_json(
                stage_dir / "started.json",
                {
                    "key": key,
                    "options": options,
                    "resolved": resolved,
                    "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                },
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
                stage_dir / "stage.json",
                {
                    "key": key,
                    "summary": summary,
                    "seconds": round(time.time() - begun, 2),
                    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                },
            )
            outcomes.append(
                StageOutcome(name, "resumed" if resuming else "ran", round(time.time() - begun, 2), key, summary)
            )
            summaries[name] = summary
        previous_key = key
        if name == until_stage:
            break
    from edgecls.pipeline.report import write_report

    report = write_report(config, summaries, outcomes) if summaries else None
    return PipelineResult(
        config.name,
        str(config.run_dir),
        outcomes,
        report and str(report["markdown"]),
        report and str(report["json"]),
        round(time.time() - started, 2),
        failed,
    )


def _finished(stage_dir: Path, key: str) -> tuple[dict[str, Any], str] | None:
    """A finished stage's summary and when it finished, if it carries ``key`` and its artifacts are all there."""
    marker = stage_dir / "stage.json"
    if not marker.is_file():
        return None
    document = json.loads(marker.read_text())
    if document.get("key") != key:
        return None
    summary = document.get("summary", {})
    if not all(Path(a["path"]).exists() for a in summary.get("artifacts", [])):
        return None
    finished_at = document.get("finished_at") or time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.localtime(marker.stat().st_mtime)
    )
    return summary, finished_at


def _started_key(stage_dir: Path) -> str | None:
    marker = stage_dir / "started.json"
    return json.loads(marker.read_text()).get("key") if marker.is_file() else None


def _notify(on_stage: Callable[[str, str], None] | None, name: str, status: str) -> None:
    log.info("%s: %s", name, status)
    if on_stage is not None:
        on_stage(name, status)
