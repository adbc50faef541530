"""The report's accuracy-vs-latency plot: one point per artifact and target, labels placed so none overlap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Box = tuple[float, float, float, float]  # left, bottom, right, top (display pixels)


def place_labels(
    anchors: list[tuple[float, float]],
    sizes: list[tuple[float, float]],
    bounds: Box,
    *,
    gap: float = 6.0,
    pad: float = 2.0,
    obstacles: list[Box] = (),
) -> list[tuple[float, float]]:
    """Lower-left corners for text boxes of ``sizes`` beside their ``anchors`` (points), no two overlapping.

    Greedy, top point first: each label tries right, left, above and below its point, each slid down or up
    past the labels already placed and the ``obstacles`` (the markers) to the nearest free place, and takes
    the place nearest its own point; a place nearer another point than its own, or outside ``bounds`` (the
    axes), loses. Every box is checked against every earlier one, so none overlap (``pad`` pixels apart);
    a label left away from its point gets a leader line from the caller (``label_distance``).
    """
    placed: list[Box] = list(obstacles)
    corners: list[tuple[float, float]] = [(0.0, 0.0)] * len(anchors)
    x0, y0, x1, y1 = bounds
    for i in sorted(range(len(anchors)), key=lambda i: (-anchors[i][1], anchors[i][0])):
        (x, y), (width, height) = anchors[i], sizes[i]
        others = [anchor for j, anchor in enumerate(anchors) if j != i and anchor != anchors[i]]
        starts = (
            (x + gap, y - height / 2, 0.0),
            (x - gap - width, y - height / 2, 3.0),
            (x - width / 2, y + gap, 6.0),
            (x - width / 2, y - gap - height, 6.0),
        )
        best: tuple[float, float, float] | None = None
        for left, bottom, penalty in starts:
            for direction in (-1, 1):
                slid = _slide(left, bottom, width, height, placed, direction, pad)
                box = (left, slid, left + width, slid + height)
                distance = label_distance((x, y), box)
                cost = distance + penalty
                if any(label_distance(other, box) < distance for other in others):
                    cost += 60.0  # it would read as another point's label
                if left < x0 or left + width > x1 or slid < y0 or slid + height > y1:
                    cost += 1e6
                if best is None or cost < best[0]:
                    best = (cost, left, slid)
        _, left, bottom = best
        corners[i] = (left, bottom)
        placed.append((left, bottom, left + width, bottom + height))
    return corners


def label_distance(point: tuple[float, float], box: Box) -> float:
    """Pixels from a point to the nearest edge of a box (0 inside it)."""
    dx = max(box[0] - point[0], 0.0, point[0] - box[2])
    dy = max(box[1] - point[1], 0.0, point[1] - box[3])
    return float((dx * dx + dy * dy) ** 0.5)


def _slide(
    left: float, bottom: float, width: float, height: float, placed: list[Box], direction: int, pad: float
) -> float:
    """``bottom`` moved down (-1) or up (+1) until the box clears every placed box by ``pad``."""
    while True:
        hits = [
            box
            for box in placed
            if box[0] < left + width + pad
            and box[2] > left - pad
            and box[1] < bottom + height + pad
            and box[3] > bottom - pad
        ]
        if not hits:
            return bottom
        bottom = min(box[1] for box in hits) - height - pad if direction < 0 else max(box[3] for box in hits) + pad


def plot_accuracy_latency(rows: list[dict[str, Any]], targets: list[str], path: Path) -> Path | None:
    """Each artifact a point: p50 latency (x) against top-1 (y), one panel per target."""
    figure = accuracy_latency_figure(rows, targets)
    if figure is None:
        return None
    from edgecls.base.plots import save_figure

    return save_figure(figure, path, dpi=100)


MARKERS = {"tflite": "o", "onnx": "s"}


def accuracy_latency_figure(rows: list[dict[str, Any]], targets: list[str]):
    """The figure of ``plot_accuracy_latency``, labels placed so that none overlap (``place_labels``).

    A ``.keras`` row is left out: its latency is its FP32 TFLite export's, already a point.
    Colour: the stage's model; marker: the format.
    """
    shown = [
        row for row in rows if row.get("top1") is not None and not any(f.get("via") for f in row["latency"].values())
    ]
    if not any(target in row["latency"] for row in shown for target in targets):
        return None
    from edgecls.base.plots import pyplot
    from edgecls.pipeline.labels import artifact_labels

    plt = pyplot()
    labels = artifact_labels(shown)
    stages = list(dict.fromkeys(row["stage"] for row in shown))
    colours = {stage: plt.get_cmap("tab10")(index % 10) for index, stage in enumerate(stages)}
    figure, axes = plt.subplots(1, len(targets), figsize=(6.5 * len(targets), 5), squeeze=False)
    drawn = []
    for axis, target in zip(axes[0], targets):
        points = [(row, row["latency"][target]["p50"], 100 * row["top1"]) for row in shown if target in row["latency"]]
        for row, x, y in points:
            axis.scatter(x, y, s=30, color=colours[row["stage"]], marker=MARKERS.get(row["format"], "o"), zorder=3)
        latencies = [x for _, x, _ in points]
        if latencies and min(latencies) > 0 and max(latencies) > 20 * min(latencies):
            axis.set_xscale("log")  # one slow artifact would squash the rest into a corner
        axis.margins(x=0.25, y=0.15)
        if axis.get_xscale() == "linear" and latencies:
            axis.set_xlim(0, 1.3 * max(latencies))  # from 0 ms, with room for the labels right of the slowest point
        where = next((row["latency"][target]["where"] for row in shown if target in row["latency"]), target)
        axis.set_title(f"{target}: {where}", fontsize=9)
        axis.set_xlabel("p50 latency (ms)")
        axis.set_ylabel("top-1 (%)")
        drawn.append((axis, points))
    figure.tight_layout()
    figure.canvas.draw()  # final axes positions and limits: the labels are placed in pixels
    renderer = figure.canvas.get_renderer()
    for axis, points in drawn:
        _label_points(figure, axis, [(labels[row["path"]], x, y) for row, x, y in points], renderer)
    return figure


def _label_points(figure, axis, points: list[tuple[str, float, float]], renderer) -> None:
    anchors = [tuple(axis.transData.transform((x, y))) for _, x, y in points]
    sizes = []
    for text, _, _ in points:
        probe = axis.text(0, 0, text, fontsize=7)
        extent = probe.get_window_extent(renderer)
        sizes.append((extent.width, extent.height))
        probe.remove()
    frame = axis.get_window_extent(renderer)
    radius = 4.0 * figure.dpi / 72  # a marker of s=30 is about 5.5 points across
    markers = [(x - radius, y - radius, x + radius, y + radius) for x, y in anchors]
    corners = place_labels(anchors, sizes, (frame.x0, frame.y0, frame.x1, frame.y1), gap=radius + 4, obstacles=markers)
    to_points = 72 / figure.dpi
    for (text, x, y), (ax, ay), (left, bottom), (width, height) in zip(points, anchors, corners, sizes):
        moved = label_distance((ax, ay), (left, bottom, left + width, bottom + height)) > radius + 6
        axis.annotate(
            text,
            (x, y),
            xytext=((left - ax) * to_points, (bottom - ay) * to_points),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize=7,
            annotation_clip=False,
            arrowprops={"arrowstyle": "-", "color": "0.3", "lw": 0.7, "shrinkA": 1, "shrinkB": 3} if moved else None,
        )
