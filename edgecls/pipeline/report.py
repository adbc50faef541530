"""The side-by-side report: one row per artifact, latency per target, and the plots.

A reader decides which artifact to ship from ``report.md`` alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecls.fileio import write_json, write_text
from edgecls.pipeline.config import PipelineConfig


def collect_rows(summaries: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every artifact of every stage, with the bench figures of each target merged in."""
    bench = summaries.get("bench", {}).get("targets", {})
    rows = [dict(row) for stage, summary in summaries.items() for row in summary.get("artifacts", [])]
    # each Keras model, then its FP32 exports; the quantized artifacts last
    order = ("train", "prune", "distill", "quantize")
    rows.sort(
        key=lambda row: (
            order.index(row["stage"]) if row["stage"] in order else len(order),
            ("keras", "tflite", "onnx").index(row["format"]),
        )
    )
    reference = next((row["top1"] for row in rows if row["name"] == "FP32 Keras"), None)
    for row in rows:
        row["latency"] = {}
        for target, measured in bench.items():
            figures = measured["models"].get(row["path"])
            if figures:
                row["latency"][target] = {
                    k: figures[k] for k in ("p50", "p99", "fps", "where", "engine", "provider", "threads", "throttled")
                }
                if figures.get("top1") is not None:
                    row["top1"] = figures["top1"]  # measured through edgecls.runtime, as on the device
        row["top1_change"] = (
            None if reference is None or row.get("top1") is None else round(100 * (row["top1"] - reference), 2) + 0.0
        )  # + 0.0: float32 vs float64 noise rounds to -0.0, shown "-0.00"
    for row in rows:  # a .keras model does not run on a device: show its FP32 TFLite export's latency, marked
        export = next(
            (
                other
                for other in rows
                if other["format"] == "tflite"
                and other["precision"] == "fp32"
                and other["stage"] == row["stage"]
                and other is not row
            ),
            None,
        )
        if row["format"] == "keras" and export is not None and export["latency"]:
            row["latency"] = {
                target: {**figures, "via": "FP32 TFLite export"} for target, figures in export["latency"].items()
            }
    return rows, bench


def write_report(config: PipelineConfig, summaries: dict[str, dict[str, Any]]) -> dict[str, Path]:
    rows, bench = collect_rows(summaries)
    run_dir = config.run_dir
    plots = {"training curves": summaries.get("train", {}).get("curves")}
    for target, measured in bench.items():
        plots[f"latency distribution, {target}"] = measured.get("plot")
    scatter = plot_accuracy_latency(rows, list(bench), run_dir / "accuracy_vs_latency.png")
    if scatter:
        plots["accuracy vs latency"] = str(scatter)
    deployed = deployed_artifact(rows)
    if deployed is not None:
        plots["confusion matrix of the deployed model"] = confusion_of(deployed, run_dir)
    document = {
        "name": config.name,
        "data": config.data,
        "seed": config.seed,
        "config": config.source,
        "rows": rows,
        "plots": plots,
        "deployed": deployed and deployed["path"],
    }
    json_path = write_json(run_dir / "report.json", document)
    markdown_path = write_text(run_dir / "report.md", to_markdown(config, rows, list(bench), bench, plots, deployed))
    return {"json": json_path, "markdown": markdown_path}


def deployed_artifact(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The artifact a Pi would get: INT8 TFLite if made, else the smallest TFLite."""
    tflite = [row for row in rows if row["format"] == "tflite"]
    int8 = [row for row in tflite if row["precision"] == "int8"]
    pool = int8 or tflite
    return min(pool, key=lambda row: row["size_bytes"]) if pool else None


def confusion_of(row: dict[str, Any], run_dir: Path) -> str | None:
    from edgecls.evaluate import evaluate

    result = evaluate(row["path"], out_dir=run_dir)
    return result.confusion_png


def to_markdown(
    config: PipelineConfig,
    rows: list[dict[str, Any]],
    targets: list[str],
    bench: dict[str, Any],
    plots: dict[str, Any],
    deployed: dict[str, Any] | None,
) -> str:
    header = ["artifact", "format", "precision", "params", "MACs", "size", "top-1", "Δ top-1"]
    for target in targets:
        header += [f"{target} p50 ms", f"{target} p99 ms", f"{target} fps"]
    lines = [
        f"# edgecls pipeline report: {config.name}",
        "",
        f"Data: `{config.data}` (validation split, seed {config.seed}); config: `{config.source}`. Top-1 of "
        "`.tflite`/`.onnx` rows is measured through `edgecls.runtime`; Δ top-1 is in points against the FP32 Keras "
        "model.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [
            row["name"],
            row["format"],
            row["precision"],
            _count(row.get("params")),
            _count(row.get("macs")),
            f"{row['size_bytes'] / 1024:.0f} KiB",
            "" if row.get("top1") is None else f"{100 * row['top1']:.2f} %",
            "" if row.get("top1_change") is None else f"{row['top1_change']:+.2f}",
        ]
        for target in targets:
            figures = row["latency"].get(target)
            mark = "†" if figures and figures.get("via") else ""
            cells += (
                [f"{figures['p50']:.3f}{mark}", f"{figures['p99']:.3f}{mark}", f"{figures['fps']:.0f}{mark}"]
                if figures
                else ["", "", ""]
            )
        lines.append("| " + " | ".join(cells) + " |")
    if any(figures.get("via") for row in rows for figures in row["latency"].values()):
        lines += [
            "",
            "† a `.keras` model does not run on a device: its latency is that of its FP32 TFLite export (the row below "
            "it).",
        ]
    lines += ["", "## Where each latency was measured", ""]
    for target in targets:
        first = next(iter(bench[target]["models"].values()), {})
        lines.append(
            f"- **{target}**: {bench[target]['where']}; {first.get('engine', '')}, {first.get('threads', '')} threads; "
            f"see `{bench[target].get('markdown')}` for each engine and provider."
        )
    if not targets:
        lines.append("- no [bench] stage: no latency measured.")
    if deployed is not None:
        lines += ["", f"Deployed candidate: `{deployed['path']}` ({deployed['name']})."]
    float_kept = [row for row in rows if row.get("float_layers")]
    for row in float_kept:
        lines.append(f"- {row['name']} keeps in float: {', '.join(row['float_layers'])}")
    lines += ["", "## Plots", ""]
    for title, path in plots.items():
        if path:
            lines.append(f"- {title}: ![{title}]({_relative(path, config.run_dir)})")
    return "\n".join(lines) + "\n"


def _count(value: int | None) -> str:
    if value is None:
        return ""
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value / 1e3:.1f} k"


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def plot_accuracy_latency(rows: list[dict[str, Any]], targets: list[str], path: Path) -> Path | None:
    """Each artifact a point: p50 latency (x) against top-1 (y), one panel per target."""
    points = [
        (row, target) for target in targets for row in rows if target in row["latency"] and row.get("top1") is not None
    ]
    if not points:
        return None
    from edgecls.plots import pyplot, save_figure

    figure, axes = pyplot().subplots(1, len(targets), figsize=(6 * len(targets), 4.5), squeeze=False)
    for axis, target in zip(axes[0], targets):
        for row in rows:
            figures = row["latency"].get(target)
            if figures and row.get("top1") is not None:
                axis.scatter(figures["p50"], 100 * row["top1"], s=30)
                axis.annotate(
                    row["name"],
                    (figures["p50"], 100 * row["top1"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        where = next((row["latency"][target]["where"] for row in rows if target in row["latency"]), target)
        axis.set_title(f"{target}: {where}", fontsize=9)
        axis.set_xlabel("p50 latency (ms)")
        axis.set_ylabel("top-1 (%)")
    figure.tight_layout()
    return save_figure(figure, path)
