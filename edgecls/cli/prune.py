"""``edgecls prune``: structured channel pruning or magnitude pruning of a .keras model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecls.cli.app import app, console, require_workstation, run, styled


@app.command()
def prune(
    model: Annotated[Path, typer.Argument(help="The .keras model to prune (it is never modified).")],
    method: Annotated[
        str,
        typer.Option(
            help="'channels' removes whole filters (faster model); 'magnitude' zeroes single weights (smaller gzip, "
            "same speed)."
        ),
    ] = "channels",
    ratio: Annotated[
        float, typer.Option(help="channels: fraction of each channel group to remove, uniformly (no budget given).")
    ] = 0.5,
    target_macs: Annotated[
        float | None,
        typer.Option(
            "--target-macs",
            help="channels: keep this fraction of the MACs (0.5: half), each group's ratio chosen by a sensitivity "
            "scan of --data's held-out images (needs --data).",
        ),
    ] = None,
    target_latency_ms: Annotated[
        float | None,
        typer.Option(
            "--target-latency-ms",
            help="channels: prune until the model runs this fast on --target (its precision and threads), measured "
            "here or on the device with --remote (needs --data).",
        ),
    ] = None,
    target: Annotated[
        str, typer.Option("--target", "-t", help="Device profile --target-latency-ms is measured with.")
    ] = "host",
    remote: Annotated[
        str | None,
        typer.Option("--remote", help="Measure --target-latency-ms on the device over SSH: user@host[:port]."),
    ] = None,
    ssh_key: Annotated[Path | None, typer.Option("--ssh-key", help="Private key for --remote.")] = None,
    remote_python: Annotated[
        str,
        typer.Option("--remote-python", help="Python on the device that has edgecls[runtime], e.g. ~/venv/bin/python."),
    ] = "python3",
    threads: Annotated[
        int | None, typer.Option(help="Threads --target-latency-ms is measured with (default: the target's).")
    ] = None,
    distill: Annotated[
        bool,
        typer.Option(
            "--distill/--no-distill",
            help="Fine-tune on the unpruned model's softened outputs as well as the labels (default on).",
        ),
    ] = True,
    criterion: Annotated[
        str, typer.Option(help="Channel importance: l1, l2 (filter norms) or bn-gamma (|BatchNorm gamma|).")
    ] = "l1",
    steps: Annotated[
        int, typer.Option(help="channels: prune in N rounds, fine-tuning between them (needs --finetune-epochs).")
    ] = 1,
    min_channels: Annotated[
        int, typer.Option("--min-channels", help="Never keep fewer channels than this in a group.")
    ] = 8,
    round_to: Annotated[
        int, typer.Option("--round-to", help="Round kept channel counts up to a multiple of N (SIMD-friendly).")
    ] = 8,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="A layer whose channels stay (repeat for several).")
    ] = None,
    sparsity: Annotated[float, typer.Option(help="magnitude: fraction of each kernel's weights set to zero.")] = 0.8,
    finetune_epochs: Annotated[
        int | None,
        typer.Option(
            "--finetune-epochs",
            help="Fine-tune after pruning (each round), through the training code of `edgecls train` (default: 15 "
            "epochs with --data, none without; 0 = off).",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="'digits' or an image folder: top-1 before/after on the model's own val split, and fine-tuning data.",
        ),
    ] = None,
    learning_rate: Annotated[
        float, typer.Option("--lr", help="Fine-tuning learning rate (Adam, cosine decay).")
    ] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed for fine-tuning.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Pruned .keras path (default: <model>_pruned.keras beside the input)."),
    ] = None,
    no_measure: Annotated[
        bool, typer.Option("--no-measure", help="Skip the TFLite conversion (file sizes and latency).")
    ] = False,
    json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout (progress stays on stderr).")
    ] = False,
) -> None:
    """Prune a model; writes <out>.keras and <out>_report.json (params, MACs, size, top-1, latency, groups).

    A budget chooses each channel group's ratio from a sensitivity scan: --target-macs 0.5, or --target-latency-ms 8.

    --ratio cuts every group alike. With data, the BatchNorm statistics are re-estimated after each channel cut.

    With --data the model is fine-tuned on the labels and the unpruned model's softened outputs.
    """
    require_workstation()
    from edgecls.cli.train import epoch_progress
    from edgecls.prune import PruneConfig
    from edgecls.prune import prune as prune_model
    from edgecls.runtime.ssh import RemoteConfig

    config = PruneConfig(
        method=method,
        ratio=ratio,
        target_macs=target_macs,
        target_latency_ms=target_latency_ms,
        target=target,
        remote=RemoteConfig(remote, ssh_key=str(ssh_key) if ssh_key else None, remote_python=remote_python)
        if remote
        else None,
        threads=threads,
        distill=distill,
        criterion=criterion,
        steps=steps,
        min_channels=min_channels,
        round_to=round_to,
        exclude=tuple(exclude or ()),
        sparsity=sparsity,
        data=data,
        finetune_epochs=finetune_epochs,
        learning_rate=learning_rate,
        seed=seed,
        out=str(out) if out else None,
        measure_tflite=not no_measure,
    )
    run(
        lambda: prune_model(model, config, callbacks=[epoch_progress(config.epochs_to_finetune())]),
        as_json=json,
        render=_render,
    )


def _ratio(after, before) -> str:
    return f"{after / before:.2f}x" if before and after is not None else ""


def _render(result) -> None:
    from rich.table import Table

    out = console()
    summary = Table(title=f"{result.method} pruning of {result.source_model}", show_header=True)
    for column in ("", "before", "after", "after/before"):
        summary.add_column(column, justify="right" if column else "left")
    summary.add_row(
        "parameters",
        f"{result.params_before:,}",
        f"{result.params_after:,}",
        _ratio(result.params_after, result.params_before),
    )
    summary.add_row(
        "MACs", f"{result.macs_before:,}", f"{result.macs_after:,}", _ratio(result.macs_after, result.macs_before)
    )
    if result.file_size_before is not None:
        summary.add_row(
            "FP32 .tflite bytes",
            f"{result.file_size_before:,}",
            f"{result.file_size_after:,}",
            _ratio(result.file_size_after, result.file_size_before),
        )
        summary.add_row(
            "  gzip -9",
            f"{result.gzip_size_before:,}",
            f"{result.gzip_size_after:,}",
            _ratio(result.gzip_size_after, result.gzip_size_before),
        )
    if result.latency_ms_before is not None:
        summary.add_row(
            "latency ms",
            f"{result.latency_ms_before:.3f}",
            f"{result.latency_ms_after:.3f}",
            _ratio(result.latency_ms_after, result.latency_ms_before),
        )
    if result.top1_before is not None:
        summary.add_row(
            "top-1",
            f"{result.top1_before:.2%}",
            f"{result.top1_after:.2%}",
            f"{(result.top1_after - result.top1_before) * 100:+.2f} pt",
        )
    out.print(summary)
    if result.latency:
        latency = result.latency
        out.print(
            f"latency: median of {latency['runs']} runs after {latency['warmup']} warm-up (fastest: "
            f"{latency['min_ms'][0]:.3f} → {latency['min_ms'][1]:.3f} ms), {latency['engine']} "
            f"({latency['provider']}), {latency['threads']} thread, {latency['where']}"
        )
    if result.budget:
        asked, reached = result.budget["asked"], result.budget["reached"]
        wanted = (
            f"{asked['macs_fraction']:g} of the MACs"
            if "macs_fraction" in asked
            else f"{asked['latency_ms']:g} ms on {asked['target']} ({asked['precision']})"
        )
        measured = f", {reached['latency_ms']:.3f} ms on {reached['where']}" if "latency_ms" in reached else ""
        out.print(f"budget: {wanted}; reached {reached['macs_fraction']:.3f} of the MACs{measured}")
    if result.groups:
        groups = Table(title="channel groups pruned")
        for column in ("group", "channels", "ratio", "layers"):
            groups.add_column(column)
        for group in result.groups:
            groups.add_row(
                group["group"],
                f"{group['channels_before']} → {group['channels_after']}",
                f"{1 - group['channels_after'] / group['channels_before']:.2f}",
                ", ".join(group["layers"][:4]) + (" …" if len(group["layers"]) > 4 else ""),
            )
        out.print(groups)
    for group in result.left_alone:
        out.print(f"left alone: {group['group']} ({group['channels']} channels): {group['reason']}")
    if result.sparsity:
        out.print(
            f"sparsity: {result.sparsity['kernel_sparsity']:.1%} of {result.sparsity['layers_pruned']} kernels, "
            f"{result.sparsity['model_sparsity']:.1%} of all weights"
        )
    out.print(styled(str(result.model_path)), f" (report {result.report_path})")
