"""``edgecls bench``: latency, memory and top-1 of artifacts here, on one device over SSH, or on a fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecls.cli.app import app, console, run, ssh_defaults


@app.command()
def bench(
    models: Annotated[list[Path], typer.Argument(help=".tflite and/or .onnx artifacts (FP32, FP16 or INT8).")],
    target: Annotated[
        str, typer.Option("--target", "-t", help="Device profile (see `edgecls targets`) or a target .toml file.")
    ] = "host",
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="Top-1 on 'digits' or a folder of <label>/ images: the model's held-out split of it (val/, or the "
            "split train made), as edgecls evaluate scores.",
        ),
    ] = None,
    corruptions: Annotated[
        bool,
        typer.Option(
            "--corruptions",
            help=(
                "With --data: top-1 under the camera corruptions of edgecls evaluate --corruptions too, each frame "
                "corrupted where the model runs (here or on the device) before Classifier.predict."
            ),
        ),
    ] = False,
    severities: Annotated[
        str, typer.Option("--severities", help="With --corruptions: severities 1..5, e.g. 1..5, 2-4 or 1,3,5.")
    ] = "1..5",
    runs: Annotated[int, typer.Option(help="Timed inferences per model.")] = 200,
    warmup: Annotated[int, typer.Option(help="Untimed inferences before timing.")] = 20,
    threads: Annotated[int | None, typer.Option(help="Engine threads (default: the target's).")] = None,
    remote: Annotated[
        list[str] | None,
        typer.Option(
            "--remote",
            help=(
                "Run on the device over SSH: user@host[:port], or user@host[:port]=TARGET for a target of its own. "
                "Repeat it for a fleet: every device measured at once, one table."
            ),
        ),
    ] = None,
    fleet: Annotated[
        Path | None,
        typer.Option(
            "--fleet",
            help=(
                "A fleet file: \\[fleet] defaults (target, remote_python, ssh_key, known_hosts) and "
                "\\[\\[fleet.device]] entries "
                'with remote = "user@host" and any of those keys (see docs/bench.md).'
            ),
        ),
    ] = None,
    ssh_key: Annotated[Path | None, typer.Option("--ssh-key", help="Private key for --remote.")] = None,
    remote_python: Annotated[
        str,
        typer.Option("--remote-python", help="Python on the device that has edgecls[runtime], e.g. ~/venv/bin/python."),
    ] = "python3",
    accept_new_host_key: Annotated[
        bool,
        typer.Option(
            "--accept-new-host-key", help="Trust the device's host key on a first connection (never a changed one)."
        ),
    ] = False,
    known_hosts: Annotated[
        Path | None, typer.Option("--known-hosts", help="known_hosts file (default: ssh's own).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report folder (default: runs/bench-<target>-<time>).")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Latency, memory and top-1 of artifacts on a target: here with its settings, or on devices over SSH.

    Several devices (--remote repeated, or --fleet) are measured in parallel, one table with a row per device x model.

    A device that fails is one FAILED row and one "failed:" line on stderr; the others complete.

    Exit code: 0 every device measured, 1 some failed, 2 bad input. Ctrl-C stops the run on every device.
    """
    from edgecls.bench import BenchConfig
    from edgecls.bench import bench as run_bench
    from edgecls.runtime.corruptions import parse_severities

    defaults = ssh_defaults(ssh_key, remote_python, accept_new_host_key, known_hosts)

    def config():  # inside run(): a bad --severities is one error line
        return BenchConfig(
            models=tuple(str(m) for m in models),
            target=target,
            data=data,
            runs=runs,
            warmup=warmup,
            threads=threads,
            out=str(out) if out else None,
            corruptions=corruptions,
            severities=parse_severities(severities),
        )

    remotes = list(remote or [])
    if len(remotes) == 1 and fleet is None:  # one device: its failure is the command's error (exit 2)
        run(
            lambda: run_bench(_one_device(config(), remotes[0], defaults)),
            as_json=json,
            render=_render_bench,
            tensorflow=False,
        )
        return
    if not remotes and fleet is None:
        run(lambda: run_bench(config()), as_json=json, render=_render_bench, tensorflow=False)
        return
    reports = []
    run(
        lambda: reports.append(_bench_fleet(config(), remotes, fleet, defaults)) or reports[0],
        as_json=json,
        render=_render_fleet,
        tensorflow=False,
    )
    failed = reports[0].failed
    for outcome in failed:
        typer.echo(f"failed: {outcome.remote} ({outcome.target}): {outcome.error}", err=True)
    if failed:
        raise typer.Exit(1)


def _one_device(config, destination: str, defaults):
    import dataclasses

    from edgecls.bench import parse_remotes

    (device,) = parse_remotes([destination], defaults=defaults)
    return dataclasses.replace(config, remote=device.remote, target=device.target or config.target)


def _bench_fleet(config, remotes: list[str], fleet: Path | None, defaults):
    import dataclasses

    from edgecls.bench import bench_fleet, load_fleet, parse_remotes

    devices = parse_remotes(remotes, defaults=defaults) + (load_fleet(fleet, defaults=defaults) if fleet else [])
    return bench_fleet(dataclasses.replace(config, fleet=tuple(devices)))


def _render_fleet(report) -> None:
    from edgecls.bench.report import render_fleet_table

    out = console()
    render_fleet_table(report.devices, out)
    for device in report.devices:
        if device.run is not None:
            _print_slower_int8(device.run, out, where=f"{device.remote} ({device.target}): ")
    out.print(
        f"reports: {report.markdown_path}, {report.json_path}" + (f", {report.plot_path}" if report.plot_path else "")
    )


def _print_slower_int8(run, out, *, where: str = "") -> None:
    """The flag in a line of its own: a table column folds it."""
    from rich.text import Text

    from edgecls.bench.siblings import NOTE_PREFIX

    for result in run.results:
        for note in result.notes:
            if note.startswith(NOTE_PREFIX):
                out.print(Text(f"⚠ {where}{Path(result.model).name}: {note}", style="bold yellow"))


def _render_bench(report) -> None:
    from edgecls.bench.report import render_table

    out = console()
    render_table(report.run, out)
    _print_slower_int8(report.run, out)
    out.print(
        f"reports: {report.markdown_path}, {report.json_path}" + (f", {report.plot_path}" if report.plot_path else "")
    )
