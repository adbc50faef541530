"""``edgecls compare A B``: which of two artifacts of one classifier is better, on the same images, with a test."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecls.cli.app import JsonOption, app, console, run, styled


@app.command()
def compare(
    model_a: Annotated[Path, typer.Argument(metavar="A", help="The current artifact: .keras, .tflite or .onnx.")],
    model_b: Annotated[Path, typer.Argument(metavar="B", help="The candidate, with the same labels.")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data", "-d", help="digits or a folder: A's held-out split of it (default: the data set A records)."
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option("--target", "-t", help="Also time both on this device profile (see `edgecls targets`)."),
    ] = None,
    runs: Annotated[int, typer.Option(help="With --target: timed inferences per model.")] = 100,
    warmup: Annotated[int, typer.Option(help="With --target: untimed inferences first.")] = 10,
    threads: Annotated[int | None, typer.Option(help="Engine threads for .tflite/.onnx.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also write the result as JSON in this folder.")
    ] = None,
    json: JsonOption = False,
) -> None:
    """A/B: top-1 with 95 % intervals, the exact McNemar test, per-class changes and a verdict at α = 0.05."""
    from edgecls.evaluate.compare import compare as compare_models

    keras = any(path.suffix == ".keras" for path in (model_a, model_b))  # two artifacts: a device command
    run(
        lambda: compare_models(
            model_a, model_b, data, target=target, runs=runs, warmup=warmup, threads=threads, out_dir=out
        ),
        as_json=json,
        render=_render_compare,
        tensorflow=keras,
    )


def _render_compare(result) -> None:
    from rich.table import Table

    out = console()
    out.print(
        styled(result.verdict),
        f"(McNemar exact p = {result.mcnemar_p:.4g}; {result.b_only_correct} images "
        f"only B got right, {result.a_only_correct} only A) on {result.n_images} validation images of "
        f"{result.data}",
    )
    table = Table("", "model", "top-1", "95 % interval", "engine")
    for name, arm in (("A", result.a), ("B", result.b)):
        low, high = arm["interval"]
        table.add_row(name, Path(arm["model"]).name, f"{arm['top1']:.2%}", f"{low:.2%} – {high:.2%}", arm["engine"])
    out.print(table)
    changed = [row for row in result.per_class if row["fixed"] or row["broken"]]
    if changed:
        per_class = Table("class", "support", "A top-1", "B top-1", "change", "fixed", "broken")
        for row in changed:
            per_class.add_row(
                row["label"],
                str(row["support"]),
                f"{row['a_top1']:.2%}",
                f"{row['b_top1']:.2%}",
                f"{row['change']:+.2%}",
                str(row["fixed"]),
                str(row["broken"]),
            )
        out.print(per_class)
    if result.latency:
        latency = result.latency
        timing = Table("", "p50 ms", "p90 ms", "end-to-end ms", "engine")
        for name in ("a", "b"):
            if latency.get(name):
                row = latency[name]
                timing.add_row(
                    name.upper(),
                    f"{row['p50_ms']:.3f}",
                    f"{row['p90_ms']:.3f}",
                    f"{row['e2e_ms']:.3f}",
                    f"{row['engine']} ({row['provider']}, {row['threads']} threads)",
                )
        out.print(f"latency: {latency['where']}, {latency['runs']} runs after {latency['warmup']} warm-up")
        out.print(timing)
    for note in result.notes:
        out.print(note)
