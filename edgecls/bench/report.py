"""``edgecls bench`` reports: the comparison table (rich), Markdown, JSON, latency PNG.

The CLI's side (rich; matplotlib when installed: a device without it gets no PNG,
one warning, and every other report); the runtime never imports this.
Every report states where the numbers were measured and under which settings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgecls.base.fileio import write_json, write_text
from edgecls.bench.config import DeviceOutcome
from edgecls.runtime.results import MeasureResult, MeasureRun

log = logging.getLogger(__name__)

COLUMNS = (
    "model",
    "precision",
    "engine",
    "size",
    "top-1",
    "p50 ms",
    "p99 ms",
    "fps",
    "e2e ms",
    "cold ms",
    "start s",
    "peak RSS MB",
    "flags",
)


def conditions(run: MeasureRun) -> str:
    """One line saying where and how: part of every table and plot."""
    settings = run.settings
    data = settings.get("data")
    skipped = settings.get("eval_skipped", 0)
    skipped_text = f"{skipped} skipped (not decodable)" if skipped else "none skipped"
    scored = f"{settings.get('n_eval', 0)} images, {skipped_text}"
    scope = f", {settings['eval_scope']}" if settings.get("eval_scope") else ""
    data_text = f"top-1 on {data} ({scored}{scope})" if data else "no accuracy data"
    remote = f" ({run.remote})" if run.remote else ""
    threads = settings.get("threads")
    return (
        f"measured on {run.where}{remote}, hostname {run.machine.get('hostname')}; "
        f"{threads} thread{'' if threads == 1 else 's'}, "
        f"{settings.get('runs')} runs after {settings.get('warmup')} warm-up, batch 1; {data_text}"
    )


# A latency figure measured under an emulated CPU (qemu-user: MeasureResult.emulated) carries this mark in every
# table, and no plot shows it: it is the emulator's speed on this host, not the device's.
EMULATED_MARK = "*"
EMULATED_LEGEND = (
    f"{EMULATED_MARK} emulated CPU (qemu-user): the latency is not the device's, not meaningful; not plotted."
)


def emulation_legend(results: list[MeasureResult]) -> list[str]:
    """The legend line for tables holding an emulated result; none otherwise."""
    return [EMULATED_LEGEND] if any(result.emulated for result in results) else []


def plotted(results: list[MeasureResult]) -> list[MeasureResult]:
    """The results whose latency a plot may show: timed, and not under an emulated CPU (said in the log)."""
    emulated = [Path(result.model).name for result in results if result.emulated and result.samples_ms]
    if emulated:
        log.warning("latency plot: %s left out, measured under an emulated CPU", ", ".join(emulated))
    return [result for result in results if result.samples_ms and not result.emulated]


CORRUPTED_COLUMN = "corrupted top-1"  # only when some model was scored under corruptions (bench --corruptions)


def columns_for(results: list[MeasureResult], *, leading: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The table's columns: ``COLUMNS``, with the corrupted top-1 after top-1 when any result has one."""
    if not any(result.mean_corruption_top1 is not None for result in results):
        return (*leading, *COLUMNS)
    at = COLUMNS.index("top-1") + 1
    return (*leading, *COLUMNS[:at], CORRUPTED_COLUMN, *COLUMNS[at:])


def table_rows(run: MeasureRun, *, corrupted: bool | None = None) -> list[list[str]]:
    if corrupted is None:
        corrupted = CORRUPTED_COLUMN in columns_for(run.results)
    return [_row(result, corrupted=corrupted) for result in run.results]


def _row(result: MeasureResult, *, corrupted: bool = False) -> list[str]:
    flags = (["THROTTLED"] if result.throttled else []) + result.notes
    mean = result.mean_corruption_top1
    mark = EMULATED_MARK if result.emulated else ""
    return [
        Path(result.model).name,
        result.precision,
        f"{result.engine} {result.engine_version} {result.provider.replace('ExecutionProvider', 'EP')}",
        _size(result.size_bytes),
        "-" if result.top1 is None else f"{100 * result.top1:.2f}%",
        *(["-" if mean is None else f"{100 * mean:.2f}%"] if corrupted else []),
        f"{result.latency_ms.p50:.3f}{mark}",
        f"{result.latency_ms.p99:.3f}{mark}",
        f"{result.fps:.1f}{mark}",
        f"{result.e2e_ms:.3f}{mark}",
        f"{result.cold_start_ms:.2f}{mark}",
        f"{result.start_s.text()}{mark}" if result.start_s else "-",
        f"{result.peak_rss_mb:.0f}",
        "; ".join(flags),
    ]


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 2**20:.2f} MB" if size_bytes >= 2**20 else f"{size_bytes / 2**10:.1f} KB"


def render_table(run: MeasureRun, console: Any) -> None:
    """Print the comparison table with rich."""
    from rich.table import Table
    from rich.text import Text

    caption = Text("\n".join([conditions(run), *emulation_legend(run.results)]))
    table = Table(title=Text(f"edgecls bench --target {run.target}"), caption=caption, caption_justify="left")
    for column in columns_for(run.results):
        table.add_column(
            column, justify="left" if column in ("model", "precision", "engine", "flags") else "right", overflow="fold"
        )
    for row in table_rows(run):
        table.add_row(
            *(Text(cell) for cell in row), style="bold red" if "THROTTLED" in row[-1] else None
        )  # Text: a file name is not markup
    console.print(table)


def to_markdown(run: MeasureRun) -> str:
    lines = [f"# edgecls bench --target {run.target}", "", conditions(run) + ".", ""]
    columns = columns_for(run.results)
    lines.append("| " + " | ".join(columns) + " |")
    lines.append(
        "|" + "|".join("---" if c in ("model", "precision", "engine", "flags") else "---:" for c in columns) + "|"
    )
    for row in table_rows(run):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    lines += [
        "",
        "Latency: the engine call on a ready input tensor. e2e: `Classifier.predict` on a 640x480 BGR frame "
        "(resize, channel order, inference, top-k).",
        "cold: the first inference. start: seconds to open the model; with a TensorRT engine cache, the first start "
        "(an engine build unless the cache held one) and a second, cached start.",
        *emulation_legend(run.results),
        "",
    ]
    lines += corruption_markdown(run)
    state = run.device_state
    if state.get("kind") not in (None, "other"):
        lines.append(f"Device state before the run: {_state_text(state)}.")
    return "\n".join(lines) + "\n"


def corruption_markdown(run: MeasureRun, *, device: str = "") -> list[str]:
    """Each corrupted model's top-1 per corruption and severity, as scored where it ran; none: no lines."""
    scored = [result for result in run.results if result.corruptions]
    if not scored:
        return []
    where = device or run.where
    lines = [
        f"## Top-1 under camera corruptions, scored on {where}",
        "",
        f"Each evaluation frame corrupted at its own size before `Classifier.predict` (`edgecls.runtime.corruptions`, "
        f"seed {run.settings.get('corruption_seed', 0)}); severities {', '.join(map(str, scored[0].severities))}.",
        "",
    ]
    for result in scored:
        lines += [
            f"**{Path(result.model).name}**: clean {100 * (result.top1 or 0):.2f}%, mean corrupted "
            f"{100 * (result.mean_corruption_top1 or 0):.2f}%",
            "",
            "| corruption | " + " | ".join(f"severity {s}" for s in result.severities) + " |",
            "|---|" + "---:|" * len(result.severities),
            *(
                f"| {name} | " + " | ".join(f"{100 * value:.1f}%" for value in values) + " |"
                for name, values in result.corruptions.items()
            ),
            "",
        ]
    return lines


def _state_text(state: dict[str, Any]) -> str:
    # A device's own JSON: whatever a key holds, the line is still written.
    parts = [state.get("board") or state.get("kind", "")]
    for key, label in (("soc_temp_c", "SoC {:.1f} C"), ("governor", "governor {}"), ("cpu_mhz", "{:.0f} MHz")):
        value = state.get(key)
        if value is not None:
            parts.append(label.format(value) if isinstance(value, (int, float)) or "{}" in label else f"{key} {value}")
    power_mode = state.get("power_mode")
    if power_mode:
        parts.append(f"power mode {power_mode.get('name') if isinstance(power_mode, dict) else power_mode}")
    if state.get("clocks_locked") is not None:
        parts.append("clocks locked" if state["clocks_locked"] else "clocks not locked")
    if state.get("throttled"):
        parts.append("THROTTLED")
    return ", ".join(str(part) for part in parts if part)


def plot_latency(run: MeasureRun, path: Path, labels: dict[str, str] | None = None) -> Path | None:
    """Box plot of every model's latency samples; ``None`` when there are none.

    ``labels``: model path → its name on the plot (the pipeline's artifact names); default the file name.
    """
    results = plotted(run.results)
    if not results:
        return None
    names = [(labels or {}).get(result.model, Path(result.model).name) for result in results]
    return _box_plot(
        names, [result.samples_ms for result in results], f"--target {run.target}: {run.where}", conditions(run), path
    )


def _box_plot(labels: list[str], samples: list[list[float]], title: str, caption: str, path: Path) -> Path | None:
    from edgecls.base.plots import matplotlib_missing, save_figure

    if matplotlib_missing("latency plot"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 1.2 + 0.6 * len(labels)))
    try:
        axes.boxplot(samples, orientation="horizontal", showfliers=True, whis=(1, 99))
    except TypeError:  # matplotlib < 3.10
        axes.boxplot(samples, vert=False, showfliers=True, whis=(1, 99))
    if max(max(values) for values in samples) > 20 * min(min(values) for values in samples):
        axes.set_xscale("log")  # a few slow outliers would squash the boxes
    axes.set_yticks(range(1, len(labels) + 1), labels)
    axes.set_xlabel("latency per inference, ms (whiskers: p1-p99)")
    axes.set_title(title, fontsize=10)
    figure.text(0.01, 0.01, caption, fontsize=6, wrap=True)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(figure, path, dpi=120)


def write_reports(run: MeasureRun, out: Path) -> dict[str, Path | None]:
    """``bench.json``, ``bench.md`` and ``latency.png`` in ``out``."""
    out = Path(out)
    markdown = to_markdown(run)  # before any file: a run that cannot be rendered leaves no half-written folder
    return {
        "json": write_json(out / "bench.json", run.to_dict()),
        "markdown": write_text(out / "bench.md", markdown),
        "plot": plot_latency(run, out / "latency.png"),
    }


# --- a fleet: one table, a row per device x model ----------------------------------------


def fleet_columns(outcomes: list[DeviceOutcome]) -> tuple[str, ...]:
    results = [result for outcome in outcomes if outcome.run for result in outcome.run.results]
    return columns_for(results, leading=("device", "target"))


def fleet_rows(outcomes: list[DeviceOutcome]) -> list[list[str]]:
    """A row per device x model; a device that failed is one row, its error in ``flags``."""
    columns = fleet_columns(outcomes)
    corrupted = CORRUPTED_COLUMN in columns
    rows = []
    for outcome in outcomes:
        if outcome.run is None:
            rows.append([outcome.remote, outcome.target, *["-"] * (len(columns) - 3), f"FAILED: {outcome.error}"])
            continue
        rows += [[outcome.remote, outcome.run.target, *row] for row in table_rows(outcome.run, corrupted=corrupted)]
    return rows


def fleet_conditions(outcomes: list[DeviceOutcome]) -> list[str]:
    return [f"{o.remote}: {conditions(o.run)}" if o.run else f"{o.remote}: FAILED, {o.error}" for o in outcomes]


def render_fleet_table(outcomes: list[DeviceOutcome], console: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    failed = sum(not outcome.ok for outcome in outcomes)
    title = f"edgecls bench on {len(outcomes)} devices" + (f", {failed} failed" if failed else "")
    every = [result for outcome in outcomes if outcome.run for result in outcome.run.results]
    caption = Text("\n".join([*fleet_conditions(outcomes), *emulation_legend(every)]))
    table = Table(title=Text(title), caption=caption, caption_justify="left")
    for column in fleet_columns(outcomes):
        left = column in ("device", "target", "model", "precision", "engine", "flags")
        table.add_column(column, justify="left" if left else "right", overflow="fold")
    for row in fleet_rows(outcomes):
        bad = "THROTTLED" in row[-1] or row[-1].startswith("FAILED")
        table.add_row(*(Text(cell) for cell in row), style="bold red" if bad else None)
    console.print(table)


def fleet_to_markdown(outcomes: list[DeviceOutcome]) -> str:
    failed = [outcome for outcome in outcomes if not outcome.ok]
    lines = [f"# edgecls bench on {len(outcomes)} devices", ""]
    lines += [f"- {line}" for line in fleet_conditions(outcomes)]
    columns = fleet_columns(outcomes)
    lines += ["", "| " + " | ".join(columns) + " |"]
    lines.append(
        "|"
        + "|".join(
            "---" if c in ("device", "target", "model", "precision", "engine", "flags") else "---:" for c in columns
        )
        + "|"
    )
    for row in fleet_rows(outcomes):
        lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |")
    every = [result for outcome in outcomes if outcome.run for result in outcome.run.results]
    lines += ["", f"{len(outcomes) - len(failed)} of {len(outcomes)} devices measured.", *emulation_legend(every), ""]
    for outcome in outcomes:
        lines += corruption_markdown(outcome.run, device=outcome.remote) if outcome.run else []
    for outcome in outcomes:
        if outcome.run is not None and outcome.run.device_state.get("kind") not in (None, "other"):
            lines.append(f"Device state of {outcome.remote} before the run: {_state_text(outcome.run.device_state)}.")
    return "\n".join(lines) + "\n"


def write_fleet_reports(outcomes: list[DeviceOutcome], out: Path) -> dict[str, Path | None]:
    """``bench.json`` (every device: its run or its error), ``bench.md`` and ``latency.png`` in ``out``."""
    out = Path(out)
    markdown = fleet_to_markdown(outcomes)
    document = {
        "devices": [outcome.to_dict() for outcome in outcomes],
        "failed": [outcome.remote for outcome in outcomes if not outcome.ok],
    }
    paths: dict[str, Path | None] = {
        "json": write_json(out / "bench.json", document),
        "markdown": write_text(out / "bench.md", markdown),
    }
    labels, samples = [], []
    for outcome in outcomes:
        for result in plotted(outcome.run.results) if outcome.run else []:
            labels.append(f"{outcome.remote}: {Path(result.model).name}")
            samples.append(result.samples_ms)
    caption = "; ".join(fleet_conditions(outcomes))
    title = f"edgecls bench on {len(outcomes)} devices"
    paths["plot"] = _box_plot(labels, samples, title, caption, out / "latency.png") if samples else None
    return paths
