"""``edgecls evaluate``: top-1/top-5 and a confusion matrix on a folder (scored whole) or the held-out split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgecls.cli.app import JsonOption, app, console, require_workstation, run, styled


DATA_HELP = (
    "A folder of <label>/ images, scored whole; digits or the model's own training folder: its held-out split "
    "(default: the data set recorded in the model)."
)


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help=".keras, .tflite or .onnx (the last two run through edgecls.runtime).")],
    data: Annotated[Optional[str], typer.Option("--data", "-d", help=DATA_HELP)] = None,
    threads: Annotated[Optional[int], typer.Option(help="Engine threads for .tflite/.onnx (default: all cores).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where the confusion matrix PNG and JSON go (default: beside the model).")] = None,
    json: JsonOption = False,
) -> None:
    """Top-1/top-5, per-class precision/recall/F1 and a confusion matrix: a folder whole, or the held-out split."""
    keras = model.suffix.lower() == ".keras"
    if keras:
        require_workstation("tensorflow")
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
        table.add_row(row["label"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    out.print(table)
    if result.confusion_png:
        out.print(f"confusion matrix: {result.confusion_png}")
