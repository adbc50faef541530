"""``edgecls info``: what is inside a .keras, .tflite or .onnx file before shipping it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecls.cli.app import app, console, require_workstation, run, styled


@app.command()
def info(
    artifact: Annotated[Path, typer.Argument(help="A .keras, .tflite or .onnx file.")],
    unsafe_load: Annotated[
        bool, typer.Option("--unsafe-load", help="Load a .keras file with safe mode off (only for files you trust).")
    ] = False,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Inputs/outputs, labels and provenance carried in the file, params, MACs, ops, integer vs float."""
    keras = artifact.suffix.lower() == ".keras"
    if keras:
        require_workstation("tensorflow")
    from edgecls.evaluate.info import inspect_artifact

    run(lambda: inspect_artifact(artifact, unsafe=unsafe_load), as_json=json, render=_render_info, tensorflow=keras)


def _render_info(result) -> None:
    from rich.table import Table

    out = console()
    out.print(styled(str(result.path)), f"({result.format}, {result.size_bytes / 1024:.0f} KiB)")
    for kind, tensors in (("input", result.inputs), ("output", result.outputs)):
        for tensor in tensors:
            out.print(
                f"  {kind}: {tensor.name} {tensor.shape} {tensor.dtype}"
                + (f" [{tensor.quantization}]" if tensor.quantization else "")
            )
    macs = f"{result.macs / 1e6:.2f} M" if result.macs else "n/a"
    params = f"{result.params:,}" if result.params is not None else "n/a"
    out.print(f"  params {params}   MACs/image {macs}")
    if result.metadata:
        shown = ", ".join(result.labels[:12]) + (" …" if len(result.labels) > 12 else "")
        out.print(f"  labels ({len(result.labels)}): {shown}")
        for key in ("source_model", "dataset", "precision", "val_accuracy", "calibration", "trained_at"):
            if key in result.provenance:
                out.print(f"  {key}: {result.provenance[key]}")
    else:
        out.print("  no edgecls metadata (labels will be class indices)")
    for note in result.notes:
        out.print(f"  note: {note}")
    if not result.op_counts:
        return
    table = Table("op", "count")
    for op, count in sorted(result.op_counts.items(), key=lambda item: -item[1]):
        table.add_row(op, str(count))
    out.print(table)
    if result.format != "keras":
        out.print(f"  compute ops in integer: {result.integer_ops}; in float: {len(result.float_ops)}")
        for op in result.float_ops[:20]:
            out.print(f"    float: {op}")
