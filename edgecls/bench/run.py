"""``edgecls bench``: measure artifacts here or on the device, compare them, write reports.

The measuring itself is ``edgecls.runtime.measure`` — the same code, here or on
the device over SSH (``edgecls.runtime.remote``). This is the workstation side:
it resolves the target, has ``edgecls.bench.evalset`` prepare the evaluation
set, runs the measurement here or remotely and has ``edgecls.bench.report``
write the comparison reports.

>>> report = bench(BenchConfig(models=("m_int8.tflite", "m_fp32.onnx"), target="rpi5", data="digits"))  # doctest: +SKIP
>>> report.run.results[0].where  # doctest: +SKIP
'x86_64 host with rpi5 settings'
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgecls.bench.evalset import prepare_eval_set
from edgecls.bench.fleet import FleetDevice
from edgecls.errors import ConfigError
from edgecls.runtime.corruptions import SEVERITIES, CorruptionSpec
from edgecls.runtime.measure import MeasureConfig, MeasureRun, measure_models
from edgecls.runtime.remote import RemoteConfig, measure_remote
from edgecls.runtime.targets import get_target


@dataclass(frozen=True)
class BenchConfig:
    """Options of ``edgecls bench``; defaults are the CLI's defaults."""

    models: tuple[str, ...]
    target: str = "host"
    data: str | None = None  # digits | a folder of <label>/ images | None (no accuracy)
    runs: int = 200
    warmup: int = 20
    threads: int | None = None  # None: the target's
    out: str | None = None  # None: runs/bench-<target>-<time>
    remote: RemoteConfig | None = None
    fleet: tuple[FleetDevice, ...] = ()  # several devices at once: edgecls.bench.fleet.bench_fleet
    corruptions: bool = False  # with data: top-1 under every camera corruption too, scored where the model runs
    severities: tuple[int, ...] = SEVERITIES
    corruption_seed: int = 0  # image i's corruption is seeded by (corruption_seed, i)

    def corruption_spec(self) -> CorruptionSpec | None:
        """What ``--corruptions`` asks the device to score, checked; None when it is off."""
        if not self.corruptions:
            return None
        if not self.data:
            raise ConfigError("--corruptions scores the --data images under each corruption: give --data")
        return CorruptionSpec.of(None, self.severities, self.corruption_seed)


@dataclass
class BenchReport:
    run: MeasureRun
    out_dir: str
    json_path: str
    markdown_path: str
    plot_path: str | None

    def to_dict(self) -> dict:
        return {
            **self.run.to_dict(),
            "reports": {"json": self.json_path, "markdown": self.markdown_path, "plot": self.plot_path},
        }


def _eval_scope(config: BenchConfig) -> str:
    """What of ``config.data`` was scored, in ``edgecls evaluate``'s words."""
    from edgecls.evaluate import is_training_data
    from edgecls.runtime.metadata import read_model_info

    info = read_model_info(config.models[0])
    if config.data == "digits":
        return "held-out split"
    if info is not None and Path(config.data).is_dir() and is_training_data(info, config.data):
        return "held-out split"
    return "whole folder"


def bench(config: BenchConfig) -> BenchReport:
    """Benchmark every model of ``config`` on the target (here, or over SSH) and write the reports."""
    from edgecls.bench.report import write_reports

    if config.fleet:
        raise ConfigError("a fleet of devices is measured by edgecls.bench.bench_fleet, not bench")
    check_models(config.models)
    target = get_target(config.target)
    corruptions = config.corruption_spec()
    with tempfile.TemporaryDirectory(prefix="edgecls-eval-") as scratch:
        eval_dir = prepare_eval_set(config.data, config.models, Path(scratch)) if config.data else None
        if config.remote is not None:
            run = measure_remote(
                config.remote,
                models=config.models,
                target=target,
                eval_dir=eval_dir,
                runs=config.runs,
                warmup=config.warmup,
                threads=config.threads,
                corruptions=corruptions,
            )
        else:
            measure_config = MeasureConfig(
                models=tuple(config.models),
                target=target,
                threads=config.threads,
                runs=config.runs,
                warmup=config.warmup,
                data=str(eval_dir) if eval_dir else None,
                corruptions=corruptions,
            )
            run = measure_models(measure_config)
    n_eval = max((result.n_eval for result in run.results), default=0)
    skipped = max((result.eval_skipped for result in run.results), default=0)
    scope = _eval_scope(config) if config.data else None
    scored = {"data": config.data, "n_eval": n_eval, "eval_skipped": skipped, "eval_scope": scope}
    run = dataclasses.replace(run, settings={**run.settings, **scored})
    out = Path(config.out) if config.out else Path("runs") / f"bench-{target.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = write_reports(run, out)
    return BenchReport(
        run, str(out), str(paths["json"]), str(paths["markdown"]), str(paths["plot"]) if paths.get("plot") else None
    )


def check_models(models: tuple[str, ...]) -> None:
    """At least one model, each an existing ``.tflite`` or ``.onnx`` file."""
    if not models:
        raise ConfigError("give at least one .tflite or .onnx model to benchmark")
    for model in models:
        if not Path(model).is_file():
            raise ConfigError(f"{model}: no such model file")
        if Path(model).suffix.lower() not in (".tflite", ".onnx"):
            raise ConfigError(
                f"{model}: bench runs .tflite and .onnx artifacts; export a .keras model first (edgecls export)"
            )
