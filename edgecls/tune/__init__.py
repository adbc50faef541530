"""``edgecls tune``: the most accurate model that meets a device's latency budget, searched with Optuna.

A multi-objective Optuna study (top-1 of the deployed artifact up, the target's p50 latency down) whose budgets
are constraints (``trial.set_constraint``, ≤ 0 feasible) and whose feasible front is ``study.best_trials``. Named
parts:

- ``space``: the choices (backbone, width, input size, weights, uniform prune ratio, precision), the default space
  and the TOML file, checked;
- ``objective``: asks a trial's choices in one place, then calls the stages the CLI and the pipeline call;
- ``gates``: the pre-training latency/size gate (the untrained candidate timed on the target) and the
  successive-halving gate, both raising or recording before training is spent;
- ``storage``: the journal file or PostgreSQL, workers, and trials whose process died;
- ``study``: the ask/tell loop, ``--workers``, resume and the time budget;
- ``report``: front.json, trials.csv, front.png, report.md; ``export``: a trial as a pipeline TOML.

>>> from edgecls.tune import TuneConfig, tune  # doctest: +SKIP
>>> result = tune(TuneConfig(data="photos/", target="rpi5", max_latency_ms=20, trials=60))  # doctest: +SKIP
>>> result.best["params"], result.best["top1"], result.best["latency_ms"]  # doctest: +SKIP
"""

from edgecls.tune.config import TuneConfig, TuneResult, parse_duration
from edgecls.tune.export import export_trial, stage_tables
from edgecls.tune.report import show
from edgecls.tune.space import Choices, SearchSpace, default_space, load_space
from edgecls.tune.storage import load_saved_study
from edgecls.tune.study import tune

__all__ = [
    "Choices",
    "SearchSpace",
    "TuneConfig",
    "TuneResult",
    "default_space",
    "export_trial",
    "load_saved_study",
    "load_space",
    "parse_duration",
    "show",
    "stage_tables",
    "tune",
]
