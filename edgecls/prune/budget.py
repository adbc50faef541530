"""A pruning budget — a fraction of the MACs, or a latency on a target — turned into each group's kept channels.

``plan_budget`` runs the sensitivity scan (``sensitivity``) on the model's own training and held-out images, then
allocates the cut (``allocate``): to ``target_macs`` of the MACs directly, or to ``target_latency_ms`` by measuring
candidates on the target (``latency``). What it chose, and why, goes into the report: the budget asked and reached,
each group's ratio, the scan's table, the latency probes.

>>> kept = plan_budget(model, PruneConfig(target_macs=0.5, data="photos/"), dataset, result, info)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.prune.allocate import Allocation, MacsModel, allocate, floor_fraction
from edgecls.prune.config import PruneConfig, PruneResult
from edgecls.prune.sensitivity import SCAN_BN_IMAGES, SCAN_VAL_IMAGES, sensitivity_scan

log = logging.getLogger(__name__)

LATENCY_PRECISIONS = ("int8", "fp16", "fp32")


def plan_budget(model: Any, config: PruneConfig, dataset: Any, result: PruneResult, info: Any) -> dict[str, int]:
    """Kept channels per group for ``config``'s budget; fills ``result.budget`` and ``result.sensitivity``."""
    from edgecls.prune.graph import analyze
    from edgecls.train.precise_bn import sample_images

    graph = analyze(model, exclude=config.exclude)
    train_pixels = sample_images(dataset.train, SCAN_BN_IMAGES, seed=config.seed)
    rows = np.arange(min(len(dataset.val), SCAN_VAL_IMAGES))
    val = dataset.val.subset(rows)
    table = sensitivity_scan(
        model, graph, train_pixels, np.asarray(val.images), np.asarray(val.labels), criterion=config.criterion,
        min_channels=config.min_channels, round_to=config.round_to, adaptive_bn=config.adaptive_bn,
        batch_size=config.batch_size,
    )  # fmt: skip
    result.sensitivity = table.to_dict()
    macs_model = MacsModel.of(model, graph)
    base = macs_model.macs({})

    def plan_for(fraction: float) -> Allocation:
        return allocate(
            table, macs_model, graph, target_macs=fraction * base, min_channels=config.min_channels,
            round_to=config.round_to,
        )  # fmt: skip

    if config.target_macs is not None:
        allocation = plan_for(config.target_macs)
        result.budget = _record(allocation, asked={"macs_fraction": config.target_macs})
        return allocation.kept
    return _latency_plan(model, graph, config, plan_for, train_pixels, info, result)


def _latency_plan(
    model: Any, graph: Any, config: PruneConfig, plan_for: Any, images: np.ndarray, info: Any, result: PruneResult
) -> dict[str, int]:
    from edgecls.base.errors import ConfigError
    from edgecls.prune.latency import search_latency, target_probe, write_candidate
    from edgecls.prune.plan import plan_channels
    from edgecls.prune.rebuild import rebuild
    from edgecls.runtime.targets import get_target

    if info is None:
        raise ConfigError("--target-latency-ms writes candidate files, which need the model's metadata")
    target = get_target(config.target)
    precision = next((p for p in target.precisions if p in LATENCY_PRECISIONS), "fp32")
    probe = target_probe(target, remote=config.remote_config(), threads=config.threads)

    def build(allocation: Allocation) -> Any:
        keep, _ = plan_channels(
            model, graph, ratio=0.0, criterion=config.criterion, min_channels=config.min_channels,
            round_to=config.round_to, final_kept=allocation.kept,
        )  # fmt: skip
        return rebuild(model, graph, keep)

    def write(candidate: Any, path: Path) -> Path:
        return write_candidate(candidate, path, info, precision, images)

    lowest = floor_fraction(
        MacsModel.of(model, graph), graph, min_channels=config.min_channels, round_to=config.round_to
    )
    search = search_latency(plan_for, build, write, probe, target_ms=config.target_latency_ms, lowest_fraction=lowest)
    result.budget = _record(
        search.allocation,
        asked={"latency_ms": config.target_latency_ms, "target": target.name, "precision": precision},
        reached={"latency_ms": round(search.latency_ms, 4), "where": search.where, "probes": search.probes},
    )
    return search.allocation.kept


def _record(allocation: Allocation, *, asked: dict[str, Any], reached: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "asked": asked,
        "reached": {"macs_fraction": round(allocation.macs / allocation.macs_before, 4), **(reached or {})},
        "predicted_loss_increase": allocation.predicted_loss_increase,
        "group_ratios": allocation.ratios,
        "group_kept": allocation.kept,
    }
