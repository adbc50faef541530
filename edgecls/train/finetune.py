"""Two-phase fine-tuning, the Keras transfer-learning guide's recipe: the head on a frozen base, then its top.

Phase 1 trains the head on a frozen pretrained base (``trainable=False``, which
also runs its BatchNormalization layers in inference mode). Phase 2 unfreezes
the top of the base at a lower learning rate; its BatchNormalization layers stay
frozen: re-estimating ImageNet statistics from a few hundred images, and
updating them with momentum 0.999, would undo what the weights learned.

A run directory of a two-phase run keeps each phase's ``fit`` files in
``phase1/`` and ``phase2/`` (backup, history.csv, best weights, tb/) and the
merged history, with a ``phase`` column, in ``history.csv``/``history.json``.
``phase1/done.json`` marks a finished phase 1, so ``--resume`` after a crash in
phase 2 (or between the phases) starts from phase 1's best weights.

>>> unfreeze_top(model, count=20)  # doctest: +SKIP
['block_15_expand', ...]
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

from edgecls.base.errors import ConfigError
from edgecls.base.fileio import atomic_path

log = logging.getLogger(__name__)

HEAD_LAYERS = ("pool", "dropout", "logits", "probs")  # models._head
PHASE_DIRS = ("phase1", "phase2")
PHASE1_DONE = "done.json"


def base_layers(model) -> list:
    """The base network's layers in graph order: every layer between the input and the head."""
    import keras

    return [
        layer
        for layer in model.layers
        if layer.name not in HEAD_LAYERS and not isinstance(layer, keras.layers.InputLayer)
    ]


def freeze_base(model) -> None:
    """Phase 1: the whole base frozen (BatchNorm in inference mode), the head trainable."""
    for layer in base_layers(model):
        layer.trainable = False


def unfreeze_top(model, *, count: int | None = None, from_layer: str | None = None) -> list[str]:
    """Phase 2: the top of the base trainable, BatchNormalization excepted; returns the unfrozen layers with weights.

    ``count``: the last ``count`` base layers (all layers, with weights or not,
    as the Keras guide counts them); ``from_layer``: that layer and every base
    layer after it; neither: the whole base.
    """
    import keras

    layers = base_layers(model)
    if from_layer is not None:
        names = [layer.name for layer in layers]
        if from_layer not in names:
            weighted = [layer.name for layer in layers if layer.weights]
            raise ConfigError(
                f"--unfreeze-from {from_layer!r}: no such layer in the {model.name} base; "
                f"its last layers with weights are {', '.join(weighted[-6:])} (`edgecls info MODEL` lists all)"
            )
        chosen = layers[names.index(from_layer) :]
    elif count is not None:
        chosen = layers[-count:] if count < len(layers) else layers
    else:
        chosen = layers
    unfrozen = []
    for layer in chosen:
        if isinstance(layer, keras.layers.BatchNormalization):
            continue  # stays in inference mode with its pretrained statistics
        layer.trainable = True
        if layer.weights:
            unfrozen.append(layer.name)
    return unfrozen


def merge_histories(first: dict[str, list[float]], second: dict[str, list[float]]) -> dict[str, list[float]]:
    """One history over both phases: every column concatenated, ``epoch`` renumbered 0..n-1, and ``phase`` (1 or 2)."""
    n_first = len(next(iter(first.values()), []))
    n_second = len(next(iter(second.values()), []))
    keys = [key for key in first if key not in ("epoch", "phase")] + [
        key for key in second if key not in first and key != "epoch"
    ]
    merged: dict[str, list[float]] = {"epoch": [float(i) for i in range(n_first + n_second)]}
    for key in keys:
        merged[key] = list(first.get(key, [math.nan] * n_first)) + list(second.get(key, [math.nan] * n_second))
    merged["phase"] = [1.0] * n_first + [2.0] * n_second
    return merged


def write_history_csv(path: Path, history: dict[str, list[float]]) -> Path:
    """``history`` (columns of equal length) as a CSV like Keras' ``CSVLogger`` writes, atomically."""
    keys = list(history)
    rows = zip(*(history[key] for key in keys))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(keys)
        for row in rows:
            writer.writerow([int(v) if key in ("epoch", "phase") else v for key, v in zip(keys, row)])
    return path
