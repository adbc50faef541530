"""``edgecls distill``: teacher → student with ``keras.distillation``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecls.cli.app import app, console, require_workstation, run, styled

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (progress stays on stderr).")]


@app.command()
def distill(
    teacher: Annotated[
        Path, typer.Option("--teacher", "-t", help="The trained teacher .keras (frozen: never updated).")
    ],
    student: Annotated[
        str,
        typer.Option(
            "--student",
            "-s",
            help="A registry name (cnn, mobilenetv2, …; built for the teacher's labels and input) or a .keras file, "
            "e.g. a pruned model.",
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="digits or a folder (default: the data set recorded in the teacher); the teacher's own train/val "
            "split is used.",
        ),
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(
            help="Width multiplier of a registry student (MobileNets), as in `edgecls train --alpha`. Not the loss "
            "weight: see --kd-weight."
        ),
    ] = None,
    temperature: Annotated[
        float,
        typer.Option(
            "--temperature", "-T", help="Softmax temperature for both models' logits (higher = softer targets)."
        ),
    ] = 2.0,
    kd_weight: Annotated[
        float,
        typer.Option(
            "--kd-weight",
            help="Weight w of the distillation term: loss = (1-w)·CE(labels) + w·[T²·KL(teacher‖student) + feature "
            "MSE].",
        ),
    ] = 0.5,
    feature_layers: Annotated[
        str,
        typer.Option(
            "--feature-layers",
            help="Also match intermediate outputs (MSE): TEACHER_LAYER:STUDENT_LAYER,… of equal output shape.",
        ),
    ] = "",
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping may end sooner).")] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = 64,
    learning_rate: Annotated[float, typer.Option("--lr", help="Initial learning rate (cosine decay to 1 %).")] = 1e-3,
    patience: Annotated[int, typer.Option(help="Early stopping: epochs without a better val accuracy (0 = off).")] = 8,
    augment: Annotated[
        str,
        typer.Option(help="'auto' (none for digits; flip,rotate,zoom for photos), 'none', or a list like flip,zoom."),
    ] = "auto",
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline",
            help="Also train the same student alone (same data, epochs, seed) to show what distillation bought.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and shuffling (the split is the teacher's).")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder (default: runs/<student>-distilled).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run in --out from its last completed epoch.")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Distil a large teacher into an edge-sized (or pruned) student; report teacher, alone and distilled top-1."""
    require_workstation()
    from edgecls.cli.train import epoch_progress
    from edgecls.distill import DistillConfig, parse_feature_layers
    from edgecls.distill import distill as distill_model

    def call():
        config = DistillConfig(
            teacher=str(teacher),
            student=student,
            data=data,
            alpha=alpha,
            temperature=temperature,
            kd_weight=kd_weight,
            feature_layers=parse_feature_layers(feature_layers),
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            patience=patience,
            augment=augment,
            baseline=baseline,
            seed=seed,
            out=str(out) if out else None,
            resume=resume,
        )
        return distill_model(config, callbacks=[epoch_progress(epochs)])

    run(call, as_json=json, render=_render_distill)


def _render_distill(result) -> None:
    from rich.table import Table

    table = Table("model", "top-1", "params", "MACs / image")
    table.add_row(
        f"teacher ({Path(result.teacher_path).name})",
        f"{result.teacher_top1:.2%}",
        f"{result.teacher_params:,}",
        f"{result.teacher_macs:,}",
    )
    if result.baseline_top1 is not None:
        table.add_row(
            f"student alone ({result.student_source})",
            f"{result.baseline_top1:.2%}",
            f"{result.student_params:,}",
            f"{result.student_macs:,}",
        )
    if result.given_top1 is not None:
        table.add_row(
            f"student as given ({Path(result.student_source).name})",
            f"{result.given_top1:.2%}",
            f"{result.student_params:,}",
            f"{result.student_macs:,}",
        )
    distilled = result.distilled_top1 if result.distilled_top1 is not None else result.student_top1
    table.add_row(
        styled(f"distilled student ({result.student_source})") if result.kept == "distilled" else "distilled student",
        styled(f"{distilled:.2%}") if result.kept == "distilled" else f"{distilled:.2%}",
        f"{result.student_params:,}",
        f"{result.student_macs:,}",
    )
    out = console()
    out.print(table)
    for warning in result.warnings:
        out.print(styled(f"kept {result.kept}: {warning}"))
    out.print(
        f"top-1 on {result.n_val} held-out images of {result.data} ({result.evaluated_with}); trained on "
        f"{result.n_train} images, T={result.temperature:g}, kd-weight {result.kd_weight:g}, best epoch "
        f"{result.best_epoch}/{result.epochs_run}, {result.seconds:.0f} s"
    )
    out.print(f"model: {result.model_path}")
    out.print(f"run:   {result.run_dir}/ ({Path(result.report_path).name}, history.json, curves.png)")
