"""The side-by-side report: one row per artifact, latency per target, and the plots.

A reader decides which artifact to ship from ``report.md`` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgecls.base.fileio import write_json, write_text
from edgecls.pipeline.candidate import deployed_artifact, deployment_target, quantize_max_drop, slower_int8_warnings
from edgecls.pipeline.config import PipelineConfig
from edgecls.pipeline.labels import artifact_labels


def collect_rows(summaries: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every artifact of every stage, with the bench figures of each target merged in."""
    bench = summaries.get("bench", {}).get("targets", {})
    robust = summaries.get("robustness", {}).get("models", {})
    rows = [dict(row) for stage, summary in summaries.items() for row in summary.get("artifacts", [])]
    for row in rows:
        if row["path"] in robust:
            row["mean_corruption_top1"] = robust[row["path"]]["mean_corruption_top1"]
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
                    k: figures.get(k)
                    for k in ("p50", "p99", "fps", "where", "on_target", "engine", "provider", "threads", "throttled")
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


def write_report(
    config: PipelineConfig, summaries: dict[str, dict[str, Any]], outcomes: Sequence[Any] = ()
) -> dict[str, Path]:
    """``report.json`` and ``report.md``; ``outcomes`` (the runner's): which stages ran and which were reused."""
    rows, bench = collect_rows(summaries)
    stages = [
        {"stage": o.stage, "status": o.status, "seconds": o.seconds, "reused_from": o.reused_from} for o in outcomes
    ]
    run_dir = config.run_dir
    plots = {"training curves": summaries.get("train", {}).get("curves")}
    for target, measured in bench.items():
        plots[f"latency distribution, {target}"] = measured.get("plot")
    from edgecls.pipeline.scatter import plot_accuracy_latency

    scatter = plot_accuracy_latency(rows, list(bench), run_dir / "accuracy_vs_latency.png")
    if scatter:
        plots["accuracy vs latency"] = str(scatter)
    deployed = deployed_artifact(rows, max_drop=quantize_max_drop(config))
    if deployed is not None:
        plots["confusion matrix of the deployed model"] = confusion_of(deployed, run_dir)
    warnings = stage_warnings(summaries) + slower_int8_warnings(rows, list(bench), artifact_labels(rows))
    document = {
        "name": config.name,
        "data": config.data,
        "seed": config.seed,
        "config": config.source,
        "rows": rows,
        "plots": plots,
        "deployed": deployed and deployed["path"],
        "warnings": warnings,
        "compare": _compare_figures(summaries.get("compare")),
        "stages": stages,
    }
    json_path = write_json(run_dir / "report.json", document)
    markdown_path = write_text(
        run_dir / "report.md",
        to_markdown(config, rows, list(bench), bench, plots, deployed, warnings=warnings)
        + compare_markdown(summaries.get("compare"), config.run_dir)
        + stages_markdown(stages),
    )
    return {"json": json_path, "markdown": markdown_path}


def stages_markdown(stages: list[dict[str, Any]]) -> str:
    """Which stage ran in this run and which was reused from an earlier one (and when that one finished)."""
    if not stages:
        return ""
    lines = ["", "## Stages", ""]
    for stage in stages:
        if stage["status"] == "reused":
            lines.append(
                f"- {stage['stage']}: reused from {stage['reused_from']} (configuration, inputs, code unchanged)"
            )
        else:
            lines.append(f"- {stage['stage']}: {stage['status']} in this run ({stage['seconds']:.1f} s)")
    return "\n".join(lines) + "\n"


def _compare_figures(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    keys = ("a", "b", "data", "n_images", "a_only_correct", "b_only_correct", "mcnemar_p", "verdict", "latency", "json")
    return {key: summary.get(key) for key in keys}


def compare_markdown(summary: dict[str, Any] | None, run_dir: Path) -> str:
    """The [compare] stage's section: both top-1 with intervals, the discordant pairs, McNemar and the verdict."""
    if summary is None:
        return ""
    a, b = summary["a"], summary["b"]
    lines = [
        "",
        "## A/B against the deployed model",
        "",
        f"On the same {summary['n_images']} images of `{summary['data']}` (`edgecls compare`):",
        "",
        "| | model | engine | top-1 | 95 % interval |",
        "|---|---|---|---|---|",
    ]
    for arm, figures in (("A", a), ("B", b)):
        name = f" ({figures['name']})" if figures.get("name") and figures["name"] != figures["model"] else ""
        low, high = figures["interval"]
        lines.append(
            f"| {arm} | `{figures['model']}`{name} | {figures['engine']} | {100 * figures['top1']:.2f} % "
            f"| {100 * low:.1f}–{100 * high:.1f} % |"
        )
    lines += [
        "",
        f"A right where B is wrong on {summary['a_only_correct']} images, B right where A is wrong on "
        f"{summary['b_only_correct']}; exact McNemar p = {summary['mcnemar_p']:.3g}: **{summary['verdict']}**.",
    ]
    latency = summary.get("latency") or {}
    for arm in ("a", "b"):
        figures = latency.get(arm)
        if figures:
            lines.append(
                f"- {arm.upper()} latency on {latency['target']} ({latency['where']}, {figures['engine']}, "
                f"{figures['threads']} threads, {latency['runs']} runs): p50 {figures['p50_ms']:.3f} ms"
            )
    lines += [f"- {note}" for note in summary.get("notes", [])]
    lines += ["", f"Per-class changes: `{_relative(summary['json'], run_dir)}`."]
    return "\n".join(lines) + "\n"


def stage_warnings(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """Every stage's warnings (training: validation at chance), each prefixed with its stage."""
    return [f"{stage}: {warning}" for stage, summary in summaries.items() for warning in summary.get("warnings", [])]


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
    *,
    warnings: list[str] = (),
) -> str:
    header = ["artifact", "format", "precision", "params", "MACs", "size", "top-1", "Δ top-1"]
    robust = any("mean_corruption_top1" in row for row in rows)
    header += ["corruption top-1"] if robust else []
    for target in targets:
        header += [f"{target} p50 ms", f"{target} p99 ms", f"{target} fps"]
    lines = [
        f"# edgecls pipeline report: {config.name}",
        "",
        f"Data: `{config.data}` (validation split, seed {config.seed}); config: `{config.source}`. Top-1 of "
        "`.tflite`/`.onnx` rows is measured through `edgecls.runtime`; Δ top-1 is in points against the FP32 Keras "
        "model.",
        "",
    ]
    if warnings:
        lines += ["**Warnings**", "", *(f"- ⚠ {warning}" for warning in warnings), ""]
    lines += [
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
        if robust:
            corrupted = row.get("mean_corruption_top1")
            cells.append("" if corrupted is None else f"{100 * corrupted:.2f} %")
        for target in targets:
            figures = row["latency"].get(target)
            mark = "†" if figures and figures.get("via") else ""
            cells += (
                [f"{figures['p50']:.3f}{mark}", f"{figures['p99']:.3f}{mark}", f"{figures['fps']:.0f}{mark}"]
                if figures
                else ["", "", ""]
            )
        lines.append("| " + " | ".join(cells) + " |")
    if robust:
        lines += [
            "",
            "Corruption top-1: the mean over the [robustness] stage's camera corruptions and severities "
            "(`edgecls evaluate --corruptions`), on the same validation split.",
        ]
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
        target = deployment_target([deployed])
        why = (
            f"the fastest TFLite on {target}, measured there, within {quantize_max_drop(config):g} top-1 points of "
            "the FP32 Keras model"
            if target
            else "the INT8 TFLite where one was made, else the smallest: no [bench] target was measured on its own "
            "device"
        )
        lines += ["", f"Deployed candidate: `{deployed['path']}` ({deployed['name']}): {why}."]
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
