"""``edgecls evaluate``: top-1/top-5 and a confusion matrix on a folder (scored whole) or the held-out split;
under camera corruptions; under attack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecls.cli.app import JsonOption, app, console, require_workstation, run, styled

DATA_HELP = (
    "A folder of <label>/ images, scored whole; digits or the model's own training folder: its held-out split "
    "(default: the data set recorded in the model)."
)


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help=".keras, .tflite or .onnx (the last two run through edgecls.runtime).")],
    data: Annotated[str | None, typer.Option("--data", "-d", help=DATA_HELP)] = None,
    threads: Annotated[int | None, typer.Option(help="Engine threads for .tflite/.onnx (default: all cores).")] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where the confusion matrix PNG and JSON go (default: beside the model)."),
    ] = None,
    corruptions: Annotated[
        bool,
        typer.Option(
            "--corruptions",
            help=(
                "Top-1 under camera corruptions (noise, blur, light, JPEG, pixelation), each frame corrupted before "
                "the resize."
            ),
        ),
    ] = False,
    severities: Annotated[
        str, typer.Option("--severities", help="With --corruptions: severities 1..5, e.g. 1..5, 2-4 or 1,3,5.")
    ] = "1..5",
    seed: Annotated[
        int,
        typer.Option("--seed", help="With --corruptions / --adversarial: image i's randomness is seeded by (seed, i)."),
    ] = 0,
    adversarial: Annotated[
        float | None,
        typer.Option(
            "--adversarial",
            metavar="EPS",
            help=("White-box FGSM and PGD top-1 of a .keras at L-inf EPS pixel levels of 0..255 (8 = 8/255)."),
        ),
    ] = None,
    pgd_steps: Annotated[
        int, typer.Option("--pgd-steps", help="With --adversarial: PGD steps (step size 2.5*EPS/steps).")
    ] = 10,
    artifacts: Annotated[
        str | None,
        typer.Option(
            "--artifacts",
            help=(
                "With --adversarial: exported files (a.tflite,b.onnx) scored on the same adversarial images (transfer)."
            ),
        ),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Top-1/top-5, per-class precision/recall/F1 and a confusion matrix: a folder whole, or the held-out split."""
    keras = model.suffix.lower() == ".keras"
    if keras or adversarial is not None:
        require_workstation("tensorflow")
    if corruptions and adversarial is not None:
        typer.echo("error: --corruptions and --adversarial are separate evaluations; run one at a time", err=True)
        raise typer.Exit(2)
    if corruptions:
        from edgecls.evaluate.robustness import evaluate_corruptions, parse_severities

        def call():
            return evaluate_corruptions(
                model, data, severities=parse_severities(severities), seed=seed, threads=threads, out_dir=out
            )

        run(call, as_json=json, render=_render_corruptions, tensorflow=keras)
        return
    if adversarial is not None:
        from edgecls.evaluate.adversarial import evaluate_adversarial

        files = [Path(part.strip()) for part in (artifacts or "").split(",") if part.strip()]
        run(
            lambda: evaluate_adversarial(model, data, adversarial, artifacts=files, pgd_steps=pgd_steps, seed=seed),
            as_json=json,
            render=_render_adversarial,
        )
        return
    from edgecls.evaluate import evaluate as evaluate_model

    call = lambda: evaluate_model(model, data, threads=threads, out_dir=out)  # noqa: E731
    run(call, as_json=json, render=_render_evaluate, tensorflow=keras)


def _render_evaluate(result) -> None:
    from rich.table import Table

    out = console()
    top5 = f", top-5 {result.top5:.2%}" if result.top5 is not None else ""
    skipped = f", {result.n_skipped} skipped (not decodable)" if result.n_skipped else ", none skipped"
    scored = f"on {result.n_images} images of {result.data} ({result.scope}{skipped})"
    out.print(styled(f"top-1 {result.top1:.2%}") + top5, scored)
    out.print(f"measured with {result.engine}")
    table = Table("class", "precision", "recall", "F1", "support")
    for row in result.per_class:
        table.add_row(
            row["label"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"])
        )
    out.print(table)
    if result.confusion_png:
        out.print(f"confusion matrix: {result.confusion_png}")


def _render_corruptions(result) -> None:
    from rich.table import Table

    out = console()
    out.print(
        styled(f"clean top-1 {result.clean_top1:.2%}, mean corruption top-1 {result.mean_corruption_top1:.2%}"),
        f"on {result.n_images} validation images of {result.data} (seed {result.seed})",
    )
    out.print(f"measured with {result.engine}; frames: {result.frames}")
    table = Table("corruption", *[f"severity {severity}" for severity in result.severities], "mean")
    for name, values in result.corruptions.items():
        table.add_row(name, *[f"{value:.2%}" for value in values], f"{sum(values) / len(values):.2%}")
    out.print(table)
    if result.plot_png:
        out.print(f"plot: {result.plot_png}")


def _render_adversarial(result) -> None:
    from rich.table import Table

    out = console()
    out.print(
        styled(f"ε = {result.epsilon:g} pixel levels (L∞, 0..255)"),
        f"on {result.n_images} validation images of {result.data}; PGD {result.pgd_steps} steps of "
        f"{result.pgd_step_size:g}",
    )
    table = Table("model", "clean", "FGSM", "PGD")
    table.add_row(
        f"{Path(result.model).name} (white-box)",
        f"{result.clean_top1:.2%}",
        f"{result.fgsm_top1:.2%}",
        f"{result.pgd_top1:.2%}",
    )
    for row in result.transfer:
        table.add_row(
            f"{Path(row['artifact']).name} (transfer)",
            f"{row['clean_top1']:.2%}",
            f"{row['fgsm_top1']:.2%}",
            f"{row['pgd_top1']:.2%}",
        )
    out.print(table)
    for note in result.notes:
        out.print(note)
