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
from pathlib import Path

from edgecls.base.errors import ConfigError
from edgecls.bench.config import BenchConfig, BenchReport, check_models
from edgecls.bench.evalset import prepare_eval_set
from edgecls.bench.siblings import flag_slower_int8
from edgecls.runtime.measure import measure_models
from edgecls.runtime.remote import measure_remote
from edgecls.runtime.results import MeasureConfig
from edgecls.runtime.targets import get_target


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
    run = flag_slower_int8(dataclasses.replace(run, settings={**run.settings, **scored}))
    out = Path(config.out) if config.out else Path("runs") / f"bench-{target.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = write_reports(run, out)
    return BenchReport(
        run, str(out), str(paths["json"]), str(paths["markdown"]), str(paths["plot"]) if paths.get("plot") else None
    )
