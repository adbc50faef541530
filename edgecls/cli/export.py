"""``edgecls export``: .tflite/.onnx artifacts with their parity against Keras."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecls.cli.app import JsonOption, app, console, require_workstation, run


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="A trained .keras model.")],
    format: Annotated[str, typer.Option("--format", "-f", help="Comma-separated: tflite, onnx.")] = "tflite,onnx",
    fp16: Annotated[
        bool, typer.Option("--fp16", help="FP16 weights for the TFLite artifact (GPU delegates, Jetson).")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: <model folder>/export).")
    ] = None,
    unsafe_load: Annotated[
        bool, typer.Option("--unsafe-load", help="Load a .keras file with safe mode off (only for files you trust).")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Write .tflite/.onnx with labels and provenance inside, and check parity against Keras."""
    require_workstation()
    from edgecls.export import export as export_model

    formats = tuple(part.strip() for part in format.split(",") if part.strip())
    run(
        lambda: export_model(model, formats=formats, fp16=fp16, out_dir=out, unsafe=unsafe_load),
        as_json=json,
        render=_render_export,
    )


def _render_export(result) -> None:
    from rich.table import Table

    table = Table("artifact", "format", "precision", "size", "parity top-1", "max |Δ score|")
    for artifact in result.artifacts:
        table.add_row(
            artifact.path,
            artifact.format,
            artifact.precision,
            f"{artifact.size_bytes / 1024:.0f} KiB",
            f"{artifact.parity_top1:.2%}",
            f"{artifact.parity_max_abs:.2e}",
        )
    out = console()
    out.print(table)
    if result.artifacts:
        out.print(f"parity against Keras on {result.artifacts[0].parity_sample}, through edgecls.runtime on this host")
