"""``edgecls explain``: Grad-CAM overlays for what a model looks at."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecls.cli.app import app, console, require_workstation, run


@app.command()
def explain(
    model: Annotated[Path, typer.Argument(help="A .keras model.")],
    images: Annotated[list[Path], typer.Argument(help="Images to explain.")],
    layer: Annotated[str | None, typer.Option(help="Convolutional layer (default: the last one).")] = None,
    class_name: Annotated[
        str | None, typer.Option("--class", help="Explain this label instead of the predicted one.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the overlays (default: <model folder>/explain).")
    ] = None,
    unsafe_load: Annotated[bool, typer.Option("--unsafe-load", help="Load a .keras file with safe mode off.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Grad-CAM heat maps over the images for the predicted (or --class) label, as PNG overlays."""
    require_workstation()
    from edgecls.evaluate.explain import explain as explain_images

    run(
        lambda: explain_images(model, images, layer=layer, class_name=class_name, out_dir=out, unsafe=unsafe_load),
        as_json=json,
        render=_render_explain,
    )


def _render_explain(result) -> None:
    out = console()
    out.print(f"Grad-CAM on layer {result.layer} of {result.model}")
    for item in result.explanations:
        out.print(f"  {item.image}: {item.label} ({item.score:.2%}) → {item.heatmap_png}")
