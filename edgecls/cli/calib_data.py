"""``edgecls calib-data``: a calibration folder from a data set's training split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecls.cli.app import JsonOption, app, console, require_workstation, run


@app.command("calib-data")
def calib_data(
    source: Annotated[
        str, typer.Option("--from", help="digits, or a training data folder of <class>/ subfolders.")
    ] = "digits",
    n: Annotated[
        int, typer.Option("--n", help="Images to write, sampled stratified by class from the TRAINING split.")
    ] = 300,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create (<class>/ subfolders).")] = Path(
        "calib_data/digits"
    ),
    seed: Annotated[int, typer.Option(help="The split seed the model was trained with (also seeds the sample).")] = 0,
    val_split: Annotated[
        float,
        typer.Option(
            "--val-split", help="The validation fraction the model was trained with; those images are never written."
        ),
    ] = 0.2,
    json: JsonOption = False,
) -> None:
    """Write a calibration folder from a data set's training split (never its validation images)."""
    require_workstation()
    from edgecls.quantize.calibration import CalibDataConfig, make_calibration_folder

    config = CalibDataConfig(source=source, out=str(out), n=n, seed=seed, val_split=val_split)
    run(lambda: make_calibration_folder(config), as_json=json, render=_render_calib_data)


def _render_calib_data(result) -> None:
    counts = ", ".join(f"{name}: {count}" for name, count in result.per_class.items())
    console().print(
        f"wrote {result.n_images} images from the {result.split} split of {result.source} to {result.out}/ ({counts})"
    )
