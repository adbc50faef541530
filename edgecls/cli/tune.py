"""``edgecls tune``: the most accurate model that meets a device's latency budget; ``--show``, ``--export``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from edgecls.cli.app import app, console, progress_console, require_workstation, run, ssh_defaults, styled


@app.command()
def tune(
    data: Annotated[str | None, typer.Option("--data", "-d", help="digits, or a folder of <class>/ images.")] = None,
    target: Annotated[
        str, typer.Option("--target", "-t", help="Device profile latency is measured with (see edgecls targets).")
    ] = "host",
    max_latency_ms: Annotated[
        float | None, typer.Option("--max-latency-ms", help="The budget: p50 of the deployed artifact on the target.")
    ] = None,
    max_size_mb: Annotated[float | None, typer.Option("--max-size-mb", help="A size budget too (MB).")] = None,
    trials: Annotated[
        int | None, typer.Option("--trials", help="Finished trials in the study, every run together (default 30).")
    ] = None,
    time_budget: Annotated[
        str | None, typer.Option("--time-budget", help="This run's wall clock, e.g. 3h, 90m, 1h30m.")
    ] = None,
    space: Annotated[Path | None, typer.Option("--space", help="Search space TOML (see docs/tune.md).")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes on this machine running trials.")] = 1,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="postgresql://… to share one study between machines (default: a journal file)."),
    ] = None,
    remote: Annotated[
        str | None, typer.Option("--remote", help="Measure on the device over SSH: user@host[:port][=TARGET].")
    ] = None,
    fleet: Annotated[
        Path | None, typer.Option("--fleet", help="A fleet file: every device must meet the budget.")
    ] = None,
    ssh_key: Annotated[Path | None, typer.Option("--ssh-key", help="Private key for --remote.")] = None,
    remote_python: Annotated[
        str, typer.Option("--remote-python", help="Python on the device that has edgecls[runtime].")
    ] = "python3",
    accept_new_host_key: Annotated[
        bool, typer.Option("--accept-new-host-key", help="Trust the device's host key on a first connection.")
    ] = False,
    known_hosts: Annotated[Path | None, typer.Option("--known-hosts", help="known_hosts file.")] = None,
    threads: Annotated[int | None, typer.Option(help="Engine threads when measuring (default: the target's).")] = None,
    calib: Annotated[
        str | None, typer.Option("--calib", help="INT8 calibration folder (default: written from the training split).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Data split, training and sampler seed.")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="The study and its reports.")] = Path("runs/tune"),
    show: Annotated[Path | None, typer.Option("--show", help="Print the front of the study in this folder.")] = None,
    export: Annotated[
        Path | None, typer.Option("--export", help="With --trial N: write the pipeline TOML that reproduces trial N.")
    ] = None,
    trial: Annotated[int | None, typer.Option("--trial", help="The trial --export writes.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Search backbone x width x input size x prune ratio x precision for the most accurate model within a latency
    budget, each candidate measured on the target (or the device over SSH) before it trains. Resumable: run the
    same command again after an interruption."""
    require_workstation("tensorflow", "optuna")
    from edgecls.tune import export_trial
    from edgecls.tune import show as show_study

    if show is not None:
        run(lambda: show_study(show, storage=storage), as_json=json, render=_render)
        return
    if export is not None:
        run(
            lambda: export_trial(export, _required(trial, "--trial"), storage=storage),
            as_json=json,
            render=lambda path: console().print(path),
        )
        return
    progress = _Progress()

    def go():
        from edgecls.tune import TuneConfig, parse_duration
        from edgecls.tune import tune as run_tune

        config = TuneConfig(
            data=_required(data, "--data"),
            max_latency_ms=_required(max_latency_ms, "--max-latency-ms"),
            target=target,
            out=str(out),
            max_size_mb=max_size_mb,
            trials=trials,
            time_budget_s=parse_duration(time_budget) if time_budget else None,
            space=str(space) if space else None,
            workers=workers,
            storage=storage,
            **_devices(remote, fleet, ssh_key, remote_python, accept_new_host_key, known_hosts),
            threads=threads,
            calib=calib,
            seed=seed,
        )
        with progress:
            return run_tune(config, on_trial=progress.trial, on_start=progress.start)

    run(go, as_json=json, render=_render)


def _required(value: Any, option: str) -> Any:
    if value is None:
        from edgecls.base.errors import ConfigError

        raise ConfigError(f"{option} is required (or --show DIR / --export DIR --trial N)")
    return value


def _devices(remote, fleet, ssh_key, remote_python, accept_new_host_key, known_hosts) -> dict[str, Any]:
    """--remote / --fleet as TuneConfig's ``remote`` / ``fleet`` (the SSH options of edgecls bench)."""
    if remote is None and fleet is None:
        return {}
    from edgecls.bench import load_fleet, parse_remotes

    defaults = ssh_defaults(ssh_key, remote_python, accept_new_host_key, known_hosts)
    devices = parse_remotes([remote], defaults=defaults) if remote else []
    devices += load_fleet(fleet, defaults=defaults) if fleet else []
    if remote is not None and fleet is None and devices[0].target is None:
        return {"remote": devices[0].remote}
    return {"fleet": tuple(devices)}  # user@host=TARGET: a fleet of one with a target of its own


class _Progress:
    """One line per trial on stderr, above a bar for the budget (trials, else the clock)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.task: Any = None
        self.by_clock = False

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    def start(self, *, finished: int, limit: int | None, budget_s: float | None) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.by_clock = limit is None
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TimeElapsedColumn(), console=progress_console(), transient=True,
        )  # fmt: skip
        self.bar.start()
        total = budget_s if self.by_clock else limit
        self.task = self.bar.add_task("seconds" if self.by_clock else "trials", total=total, completed=0)
        if finished:
            self.bar.console.print(f"resuming: {finished} finished trial(s) kept", soft_wrap=True)
        if not self.by_clock:
            self.bar.update(self.task, completed=finished)
        self._started = time.monotonic()

    def trial(self, row: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.bar.console.print(styled(f"trial {row['number']:>3}"), trial_line(row), soft_wrap=True)
        if self.by_clock:
            self.bar.update(self.task, completed=time.monotonic() - self._started)
        elif row["state"] in ("complete", "pruned"):
            self.bar.advance(self.task)


def trial_line(row: dict[str, Any]) -> str:
    """``mobilenetv2 α0.5 96px int8 · before training 3.10 ms ±0.05 · trained · top-1 85.3 % at 3.02 ms``."""
    from edgecls.tune.report import choices_label

    parts = [choices_label(row) if row.get("backbone") else "(no choices)"]
    if row["pretrain_latency_ms"] is not None:
        parts.append(f"before training {row['pretrain_latency_ms']:.3f} ms ±{row['pretrain_spread_ms'] / 2:.3f}")
    parts.append(row["verdict"])
    if row["top1"] is not None:
        parts.append(f"top-1 {100 * row['top1']:.1f} % at {row['latency_ms']:.3f} ms")
    return " · ".join(parts)


def _render(result) -> None:
    from rich.table import Table

    out = console()
    if not result.front:
        out.print(f"{result.trials} trials; none trained within the budget yet ({result.files.get('report_md')})")
        return
    table = Table(title=f"the front of {result.study} ({result.trials} trials)")
    for column in ("trial", "choices", "top-1", "p50 ms [low–high]", "before training", "size MB"):
        table.add_column(column, justify="left" if column == "choices" else "right")
    from edgecls.tune.report import choices_label

    for point in result.front:
        low, high = point["latency_interval_ms"]
        mark = " ≈" if point["overlaps"] else ""
        table.add_row(
            str(point["number"]), choices_label(point["params"]), f"{100 * point['top1']:.1f} %",
            f"{point['latency_ms']:.3f} [{low:.3f}–{high:.3f}]{mark}", f"{point['pretrain_latency_ms']:.3f}",
            f"{point['size_mb']:.2f}",
        )  # fmt: skip
    out.print(table)
    best = result.best
    out.print(
        styled(f"best: trial {best['number']}, top-1 {100 * best['top1']:.1f} % at {best['latency_ms']:.3f} ms"),
        f"({best['where']}); ≈ latency intervals overlap: not ranked",
    )
    out.print(f"report: {result.files.get('report_md')}; reproduce: edgecls tune --export {result.out} --trial N")
