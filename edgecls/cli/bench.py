"""``edgecls bench`` and ``edgecls targets``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecls.cli.app import app, console, run


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
    runs: Annotated[int, typer.Option(help="Timed inferences per model.")] = 200,
    warmup: Annotated[int, typer.Option(help="Untimed inferences before timing.")] = 20,
    threads: Annotated[int | None, typer.Option(help="Engine threads (default: the target's).")] = None,
    remote: Annotated[
        str | None, typer.Option("--remote", help="Run on the device over SSH: user@host[:port].")
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
    """Latency, memory and top-1 of artifacts on a target: here with its settings, or on the device over SSH."""
    from edgecls.bench import BenchConfig
    from edgecls.bench import bench as run_bench
    from edgecls.runtime.remote import RemoteConfig

    remote_config = None
    if remote:
        remote_config = RemoteConfig(
            destination=remote,
            ssh_key=str(ssh_key) if ssh_key else None,
            remote_python=remote_python,
            accept_new_host_key=accept_new_host_key,
            known_hosts=str(known_hosts) if known_hosts else None,
        )
    config = BenchConfig(
        models=tuple(str(m) for m in models),
        target=target,
        data=data,
        runs=runs,
        warmup=warmup,
        threads=threads,
        out=str(out) if out else None,
        remote=remote_config,
    )
    run(lambda: run_bench(config), as_json=json, render=_render_bench, tensorflow=False)


def _render_bench(report) -> None:
    from edgecls.bench.report import render_table

    out = console()
    render_table(report.run, out)
    out.print(
        f"reports: {report.markdown_path}, {report.json_path}" + (f", {report.plot_path}" if report.plot_path else "")
    )


@app.command()
def targets(json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False) -> None:
    """List the device profiles `edgecls bench --target` takes."""
    from edgecls.runtime.targets import get_target, list_targets

    run(
        lambda: {"targets": [get_target(name).to_dict() for name in list_targets()]},
        as_json=json,
        render=_render_targets,
        tensorflow=False,
    )


def _render_targets(listing) -> None:
    from rich.table import Table

    table = Table("target", "aliases", "arch", "engines", "threads", "precisions", "memory")
    for target in listing["targets"]:
        providers = [provider.replace("ExecutionProvider", "") for provider in target["providers"]]
        table.add_row(
            target["name"],
            ", ".join(target["aliases"]),
            target["arch"],
            ", ".join(target["engines"])
            + (f"\n({' > '.join(providers)})" if "onnxruntime" in target["engines"] and len(providers) > 1 else ""),
            str(target["threads"] or "all"),
            ", ".join(target["precisions"]),
            f"{target['memory_mb']} MB" if target["memory_mb"] else "-",
        )
    out = console()
    out.print(table)
    out.print("Install the runtime on the device:")  # a paragraph each: too long for a table cell
    for target in listing["targets"]:
        out.print(f"  {target['name']}: {target['install']}")
