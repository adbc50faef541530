"""Figures of a run, and the one way a figure is written: atomically, then closed.

matplotlib is imported lazily and on the ``Agg`` backend (a server or a Pi
has no display). A device install has no matplotlib: the device commands ask
``matplotlib_missing`` first and skip their figure with one warning.

>>> plt = pyplot()  # doctest: +SKIP
>>> figure, axis = plt.subplots()  # doctest: +SKIP
>>> save_figure(figure, Path("runs/a/curves.png"))  # doctest: +SKIP
PosixPath('runs/a/curves.png')
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from edgecls.base.fileio import atomic_path

log = logging.getLogger(__name__)


def matplotlib_missing(what: str) -> bool:
    """True, after one warning naming ``what`` is not drawn, where matplotlib is not installed (a device install)."""
    if importlib.util.find_spec("matplotlib") is not None:
        return False
    log.warning("%s not drawn: matplotlib is not installed (pip install matplotlib); the results are complete", what)
    return True


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive ``Agg`` backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: str | Path, *, dpi: int = 80) -> Path:
    """Write ``figure`` to ``path`` atomically (format from the suffix) and close it: pyplot keeps every open figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=dpi)
    finally:
        plt.close(figure)
    return path


def plot_curves(history: dict[str, list[float]], path: Path) -> Path:
    """Loss and accuracy per epoch, training and validation, as a PNG."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric)
            if values:
                axis.plot(range(1, len(values) + 1), values, style, label=(prefix or "train_") + metric)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    figure.tight_layout()
    return save_figure(figure, path)


def plot_distill_curves(
    history: dict[str, list[float]], baseline: dict[str, list[float]] | None, teacher_top1: float, path: Path
) -> Path:
    """Losses of the distillation (total, label and distillation terms) and of the baseline;
    val top-1 of both against the teacher's."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, (losses, accuracy) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label, style in (
        ("loss", "distilled: total (train)", "-"),
        ("val_loss", "distilled: total (val)", "--"),
        ("student_loss", "distilled: label CE term", ":"),
        ("distillation_loss", "distilled: distillation term", "-."),
    ):
        values = history.get(key)
        if values:
            losses.plot(
                range(1, len(values) + 1),
                values,
                style,
                color="C0" if key in ("loss", "val_loss") else None,
                label=label,
            )
    for key, label, style in (("loss", "alone: CE (train)", "-"), ("val_loss", "alone: CE (val)", "--")):
        values = (baseline or {}).get(key)
        if values:
            losses.plot(range(1, len(values) + 1), values, style, color="C3", label=label)
    losses.set_title("loss")
    for source, label, color in ((history, "distilled student", "C0"), (baseline or {}, "student alone", "C3")):
        values = source.get("val_accuracy")
        if values:
            accuracy.plot(range(1, len(values) + 1), values, color=color, label=label)
    accuracy.axhline(teacher_top1, color="k", linestyle=":", label=f"teacher {teacher_top1:.2%}")
    accuracy.set_title("val top-1")
    for axis in (losses, accuracy):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)
