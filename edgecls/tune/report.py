"""What a study says: one row per trial, the feasible front, and the files in ``--out``.

- ``front.json`` (scripts read it): ``{"budget": {...}, "hypervolume": …, "trials": [...]}``; each trial has
  ``number``, ``params`` (the choices), ``top1``, ``latency_ms`` (the median of the rounds' p50), ``latency_spread_ms``,
  ``size_mb`` and ``artifact``, and the pre-training latency, p90, MACs, peak memory and the front points whose
  latency intervals overlap its own (marked, not ranked);
- ``trials.csv``: every trial, gated or trained;
- ``front.png``: top-1 against latency, the budget line, the front highlighted, the grid seeds marked;
- ``report.md``: the front, the gates' effect (the share rejected before training and the training time that saved),
  the grid seeds, the pre-training latency against the final one.

The front is Optuna's ``study.best_trials``: complete, feasible (every constraint ≤ 0), non-dominated.

>>> hypervolume([(2.0, 0.8), (4.0, 0.9)], max_latency_ms=10.0)
5.4
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Any

from edgecls.base.fileio import write_json, write_text
from edgecls.tune.config import TuneResult

CSV_COLUMNS = (
    "number", "state", "verdict", "grid_seed", "retry_of", "backbone", "alpha", "size", "weights", "ratio",
    "precision", "pretrain_latency_ms", "pretrain_spread_ms", "pretrain_size_mb", "rung1_top1", "top1", "latency_ms",
    "latency_spread_ms", "latency_p90_ms", "size_mb", "macs", "peak_rss_mb", "feasible", "seconds", "artifact",
)  # fmt: skip


def trial_row(trial: Any) -> dict[str, Any]:
    """A trial as the CSV and the progress lines show it."""
    attrs = trial.user_attrs
    choices = attrs.get("choices", {})
    pretrain = attrs.get("pretrain", {})
    latency = attrs.get("latency", {})
    trained = "artifact" in attrs and trial.state.name == "COMPLETE"
    constraints = trial.constraints
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "verdict": attrs.get("verdict") or attrs.get("failed_because") or trial.state.name.lower(),
        "grid_seed": bool(attrs.get("grid_seed")),
        "retry_of": attrs.get("retry_of"),
        **{key: choices.get(key) for key in ("backbone", "alpha", "size", "weights", "ratio", "precision")},
        "pretrain_latency_ms": pretrain.get("p50_ms"),
        "pretrain_spread_ms": pretrain.get("spread_ms"),
        "pretrain_size_mb": pretrain.get("size_mb"),
        "rung1_top1": attrs.get("rung1_top1"),
        "top1": trial.values[0] if trained and trial.values else None,
        "latency_ms": latency.get("p50_ms"),
        "latency_spread_ms": latency.get("spread_ms"),
        "latency_p90_ms": latency.get("p90_ms"),
        "size_mb": attrs.get("size_mb"),
        "macs": attrs.get("macs"),
        "peak_rss_mb": latency.get("peak_rss_mb"),
        "feasible": bool(constraints) and all(value <= 0 for value in constraints.values()) and trained,
        "seconds": round(trial.duration.total_seconds(), 1) if trial.duration else None,
        "rung1_seconds": attrs.get("rung1_seconds"),
        "train_seconds": attrs.get("train_seconds"),
        "artifact": attrs.get("artifact"),
    }


def front_trials(study: Any) -> list[dict[str, Any]]:
    """``study.best_trials`` (feasible, non-dominated) by latency, with overlapping latency intervals marked."""
    trials = sorted(
        (trial for trial in study.best_trials if "artifact" in trial.user_attrs), key=lambda trial: trial.values[1]
    )
    front = []
    for trial in trials:
        attrs, latency = trial.user_attrs, trial.user_attrs["latency"]
        front.append(
            {
                "number": trial.number,
                "params": attrs["choices"],
                "top1": trial.values[0],
                "latency_ms": latency["p50_ms"],
                "latency_spread_ms": latency["spread_ms"],
                "latency_interval_ms": [latency["low_ms"], latency["high_ms"]],
                "latency_p90_ms": latency["p90_ms"],
                "size_mb": attrs["size_mb"],
                "artifact": attrs["artifact"],
                "pretrain_latency_ms": attrs["pretrain"]["p50_ms"],
                "macs": attrs.get("macs"),
                "peak_rss_mb": latency["peak_rss_mb"],
                "grid_seed": bool(attrs.get("grid_seed")),
                "where": latency["where"],
                "emulated": latency.get("emulated", ""),
            }
        )
    for point in front:
        low, high = point["latency_interval_ms"]
        point["overlaps"] = [
            other["number"]
            for other in front
            if other is not point and other["latency_interval_ms"][0] <= high and low <= other["latency_interval_ms"][1]
        ]
    return front


def hypervolume(points: list[tuple[float, float]], *, max_latency_ms: float) -> float:
    """Area of (latency, top-1) space the points dominate, from the reference (``max_latency_ms``, 0): larger is a
    better front. Points over the budget add nothing."""
    area, best = 0.0, 0.0
    for latency, top1 in sorted(points):
        if latency <= max_latency_ms and top1 > best:
            area += (max_latency_ms - latency) * (top1 - best)
            best = top1
    return round(area, 6)


def budget_of(study: Any) -> dict[str, Any]:
    context = study.user_attrs.get("context", {})
    return {key: context.get(key) for key in ("max_latency_ms", "max_size_mb", "target", "devices")}


def write_reports(study: Any, out: Path) -> dict[str, str]:
    """front.json, trials.csv, front.png and report.md in ``out``; their paths."""
    rows = [trial_row(trial) for trial in study.get_trials(deepcopy=False)]
    front = front_trials(study)
    budget = budget_of(study)
    volume = hypervolume([(p["latency_ms"], p["top1"]) for p in front], max_latency_ms=budget["max_latency_ms"])
    files = {
        "front_json": write_json(out / "front.json", {"budget": budget, "hypervolume": volume, "trials": front}),
        "trials_csv": write_text(out / "trials.csv", _csv(rows)),
        "report_md": write_text(out / "report.md", markdown(rows, front, budget, volume, study.study_name)),
    }
    from edgecls.base.plots import matplotlib_missing

    if not matplotlib_missing("front.png"):
        files["front_png"] = plot_front(rows, front, budget, out / "front.png")
    return {name: str(path) for name, path in files.items()}


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def gate_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How many sampled candidates each gate stopped, and the training time the pre-training gate saved (estimated:
    each rejected candidate would have trained rung 1, and the promoted share of them the full budget and its
    conversion, at the mean times measured in this study)."""
    sampled = [row for row in rows if row["state"] in ("complete", "pruned")]
    rejected = [row for row in sampled if row["verdict"] == "over budget"]
    stopped = [row for row in sampled if row["state"] == "pruned"]
    trained = [row for row in sampled if row["top1"] is not None]
    rung = [row["rung1_seconds"] for row in sampled if row["rung1_seconds"]]
    full = [row["train_seconds"] for row in trained if row["train_seconds"]]
    promoted = len(trained) / max(1, len(trained) + len(stopped))
    mean_rung = statistics.mean(rung) if rung else 0.0
    saved = len(rejected) * (mean_rung + promoted * (statistics.mean(full) if full else 0.0))
    return {
        "sampled": len(sampled),
        "rejected_before_training": len(rejected),
        "rejected_share": len(rejected) / len(sampled) if sampled else 0.0,
        "stopped_at_rung1": len(stopped),
        "trained": len(trained),
        "failed": sum(row["state"] == "fail" for row in rows),
        "training_seconds_saved": round(saved, 1),
    }


def markdown(
    rows: list[dict[str, Any]], front: list[dict[str, Any]], budget: dict[str, Any], volume: float, name: str
) -> str:
    gates = gate_summary(rows)
    size = f", size ≤ {budget['max_size_mb']:g} MB" if budget.get("max_size_mb") else ""
    lines = [
        f"# edgecls tune: {name}",
        "",
        f"Budget: p50 ≤ {budget['max_latency_ms']:g} ms on {budget['target']}{size}.",
    ]
    if front:
        lines += ["", f"Latency measured {front[0]['where']}."]
        if front[0]["emulated"]:
            lines += ["", f"**Emulated**: {front[0]['emulated']}: these latencies are not the device's."]
    lines += [
        "",
        f"{gates['sampled']} candidates sampled: {gates['rejected_before_training']} "
        f"({100 * gates['rejected_share']:.0f} %) over budget before training (never trained; about "
        f"{gates['training_seconds_saved'] / 60:.1f} min of training saved), {gates['stopped_at_rung1']} stopped at "
        f"rung 1, {gates['trained']} trained fully, {gates['failed']} failed.",
        "",
        "## The front",
        "",
    ]
    if not front:
        lines += ["No trained trial meets the budget yet."]
    else:
        lines += [
            f"Feasible, non-dominated trials by latency; hypervolume {volume:.4g} (ms × top-1 from "
            f"({budget['max_latency_ms']:g} ms, 0)). ≈: its latency interval (lowest to highest round) overlaps "
            "another front point's: the two are not ranked by latency. Reproduce one with "
            "`edgecls tune --export OUT --trial N`.",
            "",
            "| trial | choices | top-1 | p50 ms [low–high] | before training | size MB | MACs | peak RSS MB |",
            "|---:|---|---:|---|---:|---:|---:|---:|",
        ]
        for point in front:
            low, high = point["latency_interval_ms"]
            mark = " ≈" if point["overlaps"] else ""
            seed = " (grid seed)" if point["grid_seed"] else ""
            change = 100 * (point["pretrain_latency_ms"] / point["latency_ms"] - 1)
            lines.append(
                f"| {point['number']} | {choices_label(point['params'])}{seed} | {100 * point['top1']:.1f} % | "
                f"{point['latency_ms']:.3f} [{low:.3f}–{high:.3f}]{mark} | {point['pretrain_latency_ms']:.3f} "
                f"({change:+.0f} %) | {point['size_mb']:.2f} | {point['macs'] or 0:,} | {point['peak_rss_mb']:.0f} |"
            )
        best = max(front, key=lambda point: point["top1"])
        lines += [
            "",
            f"Best feasible: trial {best['number']}, {100 * best['top1']:.1f} % at {best['latency_ms']:.3f} ms.",
        ]
    seeds = [row for row in rows if row["grid_seed"] and row["state"] != "fail"]
    if seeds:
        lines += ["", "## Grid seeds", "", "| trial | choices | verdict | top-1 | p50 ms |", "|---:|---|---|---:|---:|"]
        for row in seeds:
            top1 = f"{100 * row['top1']:.1f} %" if row["top1"] is not None else "—"
            latency = row["latency_ms"] if row["latency_ms"] is not None else row["pretrain_latency_ms"]
            shown = f"{latency:.3f}" if latency is not None else "—"
            lines.append(f"| {row['number']} | {choices_label(row)} | {row['verdict']} | {top1} | {shown} |")
    return "\n".join(lines) + "\n"


def choices_label(choices: dict[str, Any]) -> str:
    """A trial's choices (a row or ``params``) in words: ``mobilenetv2 α0.5 96px cut 0.25 int8``."""
    from edgecls.tune.space import Choices

    return Choices(
        **{key: choices[key] for key in ("backbone", "alpha", "size", "weights", "ratio", "precision")}
    ).label()


def plot_front(rows: list[dict[str, Any]], front: list[dict[str, Any]], budget: dict[str, Any], path: Path) -> Path:
    from edgecls.base.plots import pyplot, save_figure

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 5))
    trained = [row for row in rows if row["top1"] is not None]
    for seeds, marker, label in ((False, "o", "trial"), (True, "s", "grid seed")):
        chosen = [row for row in trained if row["grid_seed"] == seeds]
        if chosen:
            axis.errorbar(
                [row["latency_ms"] for row in chosen], [100 * row["top1"] for row in chosen],
                xerr=[row["latency_spread_ms"] / 2 for row in chosen],
                fmt=marker, color="0.6", markersize=6, label=label, alpha=0.8,
            )  # fmt: skip
    if front:
        axis.plot(
            [p["latency_ms"] for p in front], [100 * p["top1"] for p in front], "-o", color="C3", label="front",
            drawstyle="steps-post",
        )  # fmt: skip
        for point in front:
            axis.annotate(str(point["number"]), (point["latency_ms"], 100 * point["top1"]), fontsize=8,
                          xytext=(4, 4), textcoords="offset points")  # fmt: skip
    axis.axvline(budget["max_latency_ms"], color="C0", linestyle="--", label=f"budget {budget['max_latency_ms']:g} ms")
    axis.set_xlabel(f"p50 latency on {budget['target']} (ms)")
    axis.set_ylabel("top-1 of the deployed artifact (%)")
    axis.set_title("edgecls tune: top-1 against latency")
    axis.legend(loc="lower right")
    figure.tight_layout()
    return save_figure(figure, path)


def show(out: str | Path, *, storage: str | None = None) -> TuneResult:
    """The study in ``out`` as it stands (reports rewritten): what ``edgecls tune --show`` prints."""
    from edgecls.tune.storage import load_saved_study

    saved = load_saved_study(out, storage=storage)
    study = saved.study
    rows = [trial_row(trial) for trial in study.get_trials(deepcopy=False)]
    files = write_reports(study, Path(out))
    return TuneResult(
        out=str(out),
        study=study.study_name,
        storage=saved.storage,
        trials=sum(row["state"] in ("complete", "pruned") for row in rows),
        this_run=0,
        stopped="",
        front=front_trials(study),
        gates=gate_summary(rows),
        files=files,
    )
