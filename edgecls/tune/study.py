"""The study: prepared once, then trials asked and told until the trial count or the clock says stop.

``tune`` prepares what every trial shares (the data's labels, a calibration folder from the training split, the
space, the devices), creates or resumes the study (the process that creates it enqueues the grid seeds), checks
that the space's fastest candidate can meet the budget at all (one line and exit 2 if not), then runs trials: in
this process, or in ``--workers`` processes of their own that share the storage. Every worker runs the same
ask → objective → tell loop (``run_trials``); a trial stopped by Ctrl-C, SIGTERM or a device that went away is
failed and queued again, so the same command resumes it. Reports are rewritten as trials finish.

>>> result = tune(TuneConfig(data="photos/", max_latency_ms=20, target="rpi5", trials=60))  # doctest: +SKIP
>>> result.best["number"], result.best["top1"]  # doctest: +SKIP
(41, 0.912)
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import signal
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecls.base.errors import ConfigError, DataError, EdgeclsError, RemoteError, RuntimeUnavailableError
from edgecls.base.fileio import write_json
from edgecls.tune.config import STUDY_NAME, TuneConfig, TuneResult
from edgecls.tune.gates import Device, build_candidate, measure_candidate
from edgecls.tune.objective import Objective, TuneContext
from edgecls.tune.space import Choices, Measuring, SearchSpace, load_space
from edgecls.tune.storage import heartbeat, open_storage, recover_stale, redact, requeue

log = logging.getLogger(__name__)

POLL_S = 2.0  # the parent of --workers reads the storage this often for finished trials
FAILURES_IN_A_ROW = 3  # trials failing one after another (not over budget: failing) stop the study
STOPPING = (RemoteError, RuntimeUnavailableError, DataError, ConfigError, OSError)  # the study cannot go on


TrialCallback = Callable[[dict[str, Any]], None]


def tune(
    config: TuneConfig, *, on_trial: TrialCallback | None = None, on_start: Callable[..., None] | None = None
) -> TuneResult:
    """Run (or resume) the study of ``config``; ``on_trial(row)`` for each trial that finishes, whichever worker ran
    it; ``on_start(finished=, limit=, budget_s=)`` once the study is open."""
    import optuna

    config.check()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are reported by ``on_trial``, not Optuna's log
    started = time.time()
    deadline = started + config.time_budget_s if config.time_budget_s else None
    storage = open_storage(config.storage_url())  # a URL that cannot be opened says so before any work
    context = prepare(config)
    study = open_study(storage, config, context)
    write_json(config.out_dir / "tune.json", {"study": study.study_name, "storage": redact(config.storage_url())})
    recover_stale(study, storage)
    check_feasible(study, context)
    watcher = Watcher(study, on_trial)
    if on_start is not None:
        on_start(finished=watcher.finished_before, limit=config.trial_limit, budget_s=config.time_budget_s)
    from edgecls.tune.report import write_reports

    def after_trial() -> None:
        if watcher.poll():
            write_reports(study, config.out_dir)

    try:
        if config.workers == 1:
            objective = Objective(context)
            stopped = run_trials(
                study, storage, objective, limit=config.trial_limit, deadline=deadline, after_trial=after_trial
            )
        else:
            stopped = _run_workers(config, context, deadline, after_trial)
    finally:  # Ctrl-C, SIGTERM, a device gone: the reports still hold every trial finished so far
        with contextlib.suppress(Exception):
            after_trial()
    files = write_reports(study, config.out_dir)
    from edgecls.tune.report import front_trials, gate_summary, trial_row

    finished = study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    return TuneResult(
        out=str(config.out_dir),
        study=study.study_name,
        storage=redact(config.storage_url()),
        trials=len(finished),
        this_run=len(finished) - watcher.finished_before,
        stopped=stopped,
        front=front_trials(study),
        gates=gate_summary([trial_row(trial) for trial in study.get_trials(deepcopy=False)]),
        files=files,
        seconds=round(time.time() - started, 1),
    )


def prepare(config: TuneConfig) -> TuneContext:
    """The data's labels and channel order, the calibration folder, the space and the devices: once per run."""
    from edgecls.data import load_dataset
    from edgecls.data.sets import default_channel_order
    from edgecls.runtime.targets import get_target

    devices = tuple(Device(get_target(target), remote, config.threads) for target, remote in config.devices())
    channel_order = default_channel_order(config.data)
    dataset = load_dataset(config.data, image_size=(16, 16), channel_order=channel_order, seed=config.seed)
    precision = next((p for p in devices[0].target.precisions if p in ("int8", "fp16", "fp32")), "int8")
    space = load_space(config.space, rgb=channel_order == "RGB", precision=precision)
    calib = config.calib
    if calib is None and "int8" in space.precisions:
        calib = str((config.out_dir / "calib").resolve())
        if not Path(calib).is_dir():
            from edgecls.quantize.calibration import CalibDataConfig, make_calibration_folder

            make_calibration_folder(CalibDataConfig(source=config.data, out=calib, seed=config.seed))
    data = config.data if config.data == "digits" else str(Path(config.data).resolve())
    return TuneContext(
        space, data, tuple(dataset.class_names), channel_order, calib, devices, config.max_latency_ms,
        config.max_size_mb, config.out_dir.resolve(), config.seed,
    )  # fmt: skip


def study_name(config: TuneConfig) -> str:
    """One study per --out folder name: machines sharing a PostgreSQL study run the same command."""
    return f"{STUDY_NAME}-{config.out_dir.resolve().name}"


def _sampler(config: TuneConfig, worker: int) -> Any:
    """TPE (Optuna's multi-objective default, honouring ``set_constraint``), seeded apart for every worker."""
    import socket

    import optuna

    seed = config.seed if worker == 0 else zlib.crc32(f"{config.seed}/{socket.gethostname()}/{worker}".encode())
    return optuna.samplers.TPESampler(seed=seed)


def open_study(storage: Any, config: TuneConfig, context: TuneContext) -> Any:
    """Create the study and enqueue its grid seeds, or load it and check it was started with the same options."""
    import optuna

    name, sampler = study_name(config), _sampler(config, 0)
    defining = _plain({**config.defining(), "space": context.space.to_dict()})
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, directions=["maximize", "minimize"], sampler=sampler
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        recorded = _wait_for(study, "defining")
        if recorded != defining:
            changed = sorted(key for key in set(recorded) | set(defining) if recorded.get(key) != defining.get(key))
            raise ConfigError(
                f"{config.out_dir}: its study {name} was started with other {', '.join(changed)}; run the same command "
                "to resume it, or give another --out"
            ) from None
        return study
    study.set_user_attr("context", _plain(_context_record(config, context)))
    study.set_user_attr("space", _plain(context.space.to_dict()))
    for seed in context.space.grid:
        study.enqueue_trial(context.space.params(seed, weights_asked=False), user_attrs={"grid_seed": True})
    study.set_user_attr("defining", defining)  # last: a worker that loads the study waits for it
    return study


def _context_record(config: TuneConfig, context: TuneContext) -> dict[str, Any]:
    return {
        "data": context.data,
        "seed": context.seed,
        "calib": context.calib,
        "target": ", ".join(device.name for device in context.devices),
        "devices": [[device.target.name, getattr(device.remote, "destination", None)] for device in context.devices],
        "max_latency_ms": config.max_latency_ms,
        "max_size_mb": config.max_size_mb,
    }


def _plain(value: Any) -> Any:
    """As the storage gives it back (JSON: tuples are lists)."""
    return json.loads(json.dumps(value))


def _wait_for(study: Any, key: str, timeout_s: float = 60.0) -> Any:
    """A study attribute its creator (another process, maybe another machine) is about to write."""
    waited = time.monotonic()
    while key not in study.user_attrs:
        if time.monotonic() - waited > timeout_s:
            raise ConfigError(f"the study {study.study_name} exists but its creator never finished setting it up")
        time.sleep(0.5)
    return study.user_attrs[key]


def fastest_corners(space: SearchSpace) -> list[Choices]:
    """Each backbone at its smallest width and size, cut the most, at every precision: the cheapest by MACs first."""
    from edgecls.models.stats import count_params_and_macs

    corners = []
    for backbone in space.backbones:
        alpha = min(backbone.alphas) if backbone.alphas else None
        corner = Choices(backbone.name, alpha, min(backbone.sizes), "none", max(space.ratios), space.precisions[0])
        _params, macs = count_params_and_macs(build_candidate(corner, classes=2, channels=3))
        corners += [
            (macs, index, Choices(**{**corner.to_dict(), "precision": p})) for index, p in enumerate(space.precisions)
        ]
    return [choices for _macs, _index, choices in sorted(corners, key=lambda item: item[:2])]


def check_feasible(study: Any, context: TuneContext) -> None:
    """Before any training: can the space's fastest corner meet the budget? Measured once per study; the first
    measurement also finds an unreachable device. Raises ``ConfigError`` naming the fastest latency measured."""
    import keras

    if "fastest" in study.user_attrs or any(_feasible(trial) for trial in study.get_trials(deepcopy=False)):
        return
    measured = []
    for choices in fastest_corners(context.space):
        keras.backend.clear_session()
        candidate = measure_candidate(
            choices, info=context.info(choices.size), calibration=context.calibration(choices.size, choices.precision),
            devices=list(context.devices), measuring=Measuring(rounds=1, runs=context.space.measuring.runs,
                                                               warmup=context.space.measuring.warmup),
            lock=context.lock,
        )  # fmt: skip
        measured.append((candidate.latency.p50_ms, choices, candidate))
        record = {"choices": choices.to_dict(), "latency_ms": candidate.latency.p50_ms, "size_mb": candidate.size_mb}
        if all(value <= 0 for value in context.budget_constraints(candidate.latency, candidate.size_mb).values()):
            study.set_user_attr("fastest", record)
            return
    latency, choices, candidate = min(measured, key=lambda item: item[0])
    size = f", size {candidate.size_mb:.2f} MB (--max-size-mb {context.max_size_mb:g})" if context.max_size_mb else ""
    raise ConfigError(
        f"--max-latency-ms {context.max_latency_ms:g}: no candidate of the space can meet the budget; the fastest "
        f"measured, {choices.label()}, takes {latency:.3f} ms{size} ({candidate.latency.where}); raise the budget or "
        "give the space smaller choices (--space)"
    )


def _feasible(trial: Any) -> bool:
    return trial.state.name == "COMPLETE" and bool(trial.constraints) and max(trial.constraints.values()) <= 0


def _counted(study: Any) -> int:
    import optuna

    states = optuna.trial.TrialState
    return len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING)))


def run_trials(
    study: Any,
    storage: Any,
    objective: Objective,
    *,
    limit: int | None,
    deadline: float | None,
    after_trial: Callable[[], None] = lambda: None,
) -> str:
    """Ask, run, tell until the study holds ``limit`` trials or ``deadline`` passes; why it stopped."""
    import optuna

    failures = 0
    while True:
        recover_stale(study, storage)
        if limit is not None and _counted(study) >= limit:
            return "trials"
        if deadline is not None and time.time() >= deadline:
            return "time budget"
        trial = study.ask()
        with heartbeat(trial):
            try:
                values = objective(trial)
            except optuna.TrialPruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            except (*STOPPING, KeyboardInterrupt, SystemExit, _Stop) as stop:
                _give_back(study, trial, stop)
                raise
            except Exception as exc:  # this candidate failed (a converter, the pruner): record it, go on
                failures += 1
                trial.set_user_attr("failed_because", f"{type(exc).__name__}: {exc}"[:500])
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                log.warning("trial %d failed: %s: %s", trial.number, type(exc).__name__, exc)
                if failures >= FAILURES_IN_A_ROW:
                    raise EdgeclsError(
                        f"{failures} trials in a row failed, the last with {type(exc).__name__}: {exc} (trials.csv "
                        "has each one's reason; --debug shows the traceback)"
                    ) from exc
            else:
                study.tell(trial, list(values))
                failures = 0
        after_trial()


def _give_back(study: Any, trial: Any, stop: BaseException) -> None:
    """A trial this process cannot finish: failed, and its parameters queued again for the next run."""
    import optuna

    why = "interrupted" if isinstance(stop, (KeyboardInterrupt, _Stop)) else f"{type(stop).__name__}: {stop}"
    trial.set_user_attr("failed_because", why[:500])
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    requeue(study, study.get_trials(deepcopy=False)[trial.number])


class _Stop(BaseException):
    """SIGTERM in a worker process: end the trial as Ctrl-C would."""


class Watcher:
    """Reports each finished trial once, whichever process finished it."""

    def __init__(self, study: Any, on_trial: TrialCallback | None) -> None:
        self.study, self.on_trial = study, on_trial
        self.seen = {trial.number for trial in study.get_trials(deepcopy=False) if trial.state.is_finished()}
        self.finished_before = sum(
            trial.state.name in ("COMPLETE", "PRUNED") for trial in study.get_trials(deepcopy=False)
        )

    def poll(self) -> bool:
        """Report trials finished since the last poll; whether there were any."""
        from edgecls.tune.report import trial_row

        new = [t for t in self.study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in self.seen]
        for trial in new:
            self.seen.add(trial.number)
            if self.on_trial is not None:
                self.on_trial(trial_row(trial))
        return bool(new)


def _run_workers(config: TuneConfig, context: TuneContext, deadline: float | None, poll: Callable[[], None]) -> str:
    """``config.workers`` processes of their own on the shared storage; this one reports as they finish trials."""
    spawn = multiprocessing.get_context("spawn")
    errors = spawn.Queue()
    processes = [
        spawn.Process(
            target=_worker_main, args=(config, context, deadline, index, errors), name=f"edgecls-tune-worker-{index}"
        )
        for index in range(config.workers)
    ]
    for process in processes:
        process.start()
    try:
        while any(process.is_alive() for process in processes):
            time.sleep(POLL_S)
            poll()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker fails its trial and queues it again
        for process in processes:
            process.join()
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    if messages:
        raise EdgeclsError(messages[0])
    return "time budget" if deadline is not None and time.time() >= deadline else "trials"


def _worker_main(config: TuneConfig, context: TuneContext, deadline: float | None, index: int, errors: Any) -> None:
    """One worker process: its own storage connection and sampler seed, the same loop."""
    import optuna

    def stop(signum: int, frame: Any) -> None:
        raise _Stop()

    signal.signal(signal.SIGTERM, stop)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = open_storage(config.storage_url())
        study = optuna.load_study(study_name=study_name(config), storage=storage, sampler=_sampler(config, index + 1))
        run_trials(study, storage, Objective(context), limit=config.trial_limit, deadline=deadline)
    except (KeyboardInterrupt, _Stop):
        pass
    except EdgeclsError as exc:
        errors.put(str(exc))
    except Exception as exc:  # a bug: the parent says it in one line
        errors.put(f"worker {index}: {type(exc).__name__}: {exc}")
