"""A/B verdict between two artifacts of the same classifier, scored on the very same images.

Top-1 of each with its 95 % Wilson interval, the exact McNemar test on the
images where exactly one of them is right (paired: the same images, so the
discordant pairs carry the whole difference), per-class changes, a verdict at
α = 0.05, and, when a target is given, both artifacts' latency through the
runtime's one timing loop (``edgecls.runtime.measure``).

>>> result = compare("v1/model.tflite", "v2/model_int8.tflite", "data/")  # doctest: +SKIP
>>> result.verdict, round(result.mcnemar_p, 4)  # doctest: +SKIP
('B better', 0.0215)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.base.errors import DataError, ModelError
from edgecls.base.fileio import write_json
from edgecls.evaluate import describe_engine, model_info, predict_scores, validation_set

log = logging.getLogger(__name__)

ALPHA = 0.05
Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile
RUNTIME_SUFFIXES = (".tflite", ".onnx")


@dataclass
class CompareResult:
    a: dict[str, Any]  # model, engine, top1, interval [low, high], correct
    b: dict[str, Any]
    data: str
    n_images: int
    a_only_correct: int  # discordant pairs: A right, B wrong
    b_only_correct: int  # B right, A wrong
    mcnemar_p: float
    verdict: str  # "B better", "B worse" or "no significant difference at α = 0.05"
    alpha: float = ALPHA
    per_class: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / total`` (95 % by default).

    >>> tuple(round(x, 4) for x in wilson_interval(9, 10))
    (0.5958, 0.9821)
    """
    if total <= 0:
        return (0.0, 1.0)
    share = correct / total
    denominator = 1.0 + z * z / total
    centre = (share + z * z / (2 * total)) / denominator
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p: the binomial(n = a_only + b_only, 1/2) tails at the smaller count, doubled.

    >>> mcnemar_exact(1, 9)
    0.021484375
    """
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be non-negative, got {a_only} and {b_only}")
    total = a_only + b_only
    if total == 0:
        return 1.0
    tail = sum(math.comb(total, k) for k in range(min(a_only, b_only) + 1))
    return min(1.0, 2.0 * tail / 2**total)


def verdict(a_only: int, b_only: int, p_value: float, alpha: float = ALPHA) -> str:
    """``B better`` / ``B worse`` when McNemar rejects equal accuracy at ``alpha``, else no significant difference."""
    if p_value < alpha and b_only != a_only:
        return "B better" if b_only > a_only else "B worse"
    return f"no significant difference at α = {alpha:g}"


def compare(
    model_a: str | Path,
    model_b: str | Path,
    data: str | None = None,
    *,
    target: str | None = None,
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    out_dir: str | Path | None = None,
) -> CompareResult:
    """Score ``model_a`` and ``model_b`` on A's held-out split of ``data``; McNemar, verdict, optional latency."""
    path_a, path_b = Path(model_a), Path(model_b)
    info_a, info_b = model_info(path_a), model_info(path_b)
    if info_a.labels != info_b.labels:
        raise ModelError(
            f"{path_a.name} and {path_b.name} have different labels ({_describe_labels(info_a.labels)} "
            f"vs {_describe_labels(info_b.labels)}); compare needs two artifacts of the same classifier"
        )
    images, dataset = validation_set(info_a, data)
    images_b = images
    if (info_b.input_size, info_b.channel_order) != (info_a.input_size, info_a.channel_order):
        # the same files at B's size: A's split, so the pairs are the same images
        images_b, _ = validation_set(dataclasses.replace(info_b, provenance=info_a.provenance), data)
        if images_b.sources != images.sources:
            raise DataError(f"{data}: A's and B's validation images differ; pass a folder with a fixed val/ split")
    right_a = predict_scores(path_a, images, threads=threads).argmax(axis=1) == images.labels
    right_b = predict_scores(path_b, images_b, threads=threads).argmax(axis=1) == images.labels
    a_only, b_only = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    p_value = mcnemar_exact(a_only, b_only)
    result = CompareResult(
        a=_arm(path_a, right_a, threads),
        b=_arm(path_b, right_b, threads),
        data=dataset.name,
        n_images=len(images),
        a_only_correct=a_only,
        b_only_correct=b_only,
        mcnemar_p=p_value,
        verdict=verdict(a_only, b_only, p_value),
        per_class=_per_class(images.labels, right_a, right_b, info_a.labels),
    )
    if target:
        result.latency = _latency(
            (path_a, path_b), target, runs=runs, warmup=warmup, threads=threads, notes=result.notes
        )
    if out_dir:
        write_json(result_path(out_dir, path_a, path_b), result)
    return result


def result_path(out_dir: str | Path, model_a: str | Path, model_b: str | Path) -> Path:
    """Where ``compare(..., out_dir=out_dir)`` writes its JSON."""
    return Path(out_dir) / f"compare_{Path(model_a).stem}_vs_{Path(model_b).stem}.json"


def _describe_labels(labels: tuple[str, ...]) -> str:
    return f"{len(labels)}: {', '.join(labels[:4])}{', …' if len(labels) > 4 else ''}"


def _arm(path: Path, right: np.ndarray, threads: int | None) -> dict[str, Any]:
    correct, total = int(right.sum()), int(right.size)
    low, high = wilson_interval(correct, total)
    return {
        "model": str(path),
        "engine": describe_engine(path, threads),
        "top1": round(correct / max(total, 1), 4),
        "interval": [round(low, 4), round(high, 4)],
        "correct": correct,
        "n": total,
    }


def _per_class(labels: np.ndarray, right_a: np.ndarray, right_b: np.ndarray, names: tuple[str, ...]) -> list[dict]:
    rows = []
    for index, name in enumerate(names):
        members = labels == index
        support = int(members.sum())
        if not support:
            continue
        top1_a, top1_b = float(right_a[members].mean()), float(right_b[members].mean())
        rows.append(
            {
                "label": name,
                "support": support,
                "a_top1": round(top1_a, 4),
                "b_top1": round(top1_b, 4),
                "change": round(top1_b - top1_a, 4),
                "fixed": int(np.sum(members & right_b & ~right_a)),
                "broken": int(np.sum(members & right_a & ~right_b)),
            }
        )
    return rows


def _latency(paths, target: str, *, runs: int, warmup: int, threads: int | None, notes: list[str]) -> dict[str, Any]:
    from edgecls.runtime.measure import measure_models
    from edgecls.runtime.results import MeasureConfig
    from edgecls.runtime.targets import get_target

    timed = tuple(str(path) for path in paths if path.suffix in RUNTIME_SUFFIXES)
    for path in paths:
        if path.suffix not in RUNTIME_SUFFIXES:
            notes.append(f"{path.name}: no latency on a target for a .keras (export it first)")
    if not timed:
        return {}
    measured = measure_models(
        MeasureConfig(models=timed, target=get_target(target), threads=threads, runs=runs, warmup=warmup)
    )
    by_model = {
        result.model: {
            "p50_ms": round(result.latency_ms.p50, 4),
            "p90_ms": round(result.latency_ms.p90, 4),
            "e2e_ms": round(result.e2e_ms, 4),
            "engine": f"{result.engine} {result.engine_version}",
            "provider": result.provider,
            "threads": result.threads,
        }
        for result in measured.results
    }
    return {
        "target": measured.target,
        "where": measured.where,
        "on_target": measured.on_target,
        "runs": runs,
        "warmup": warmup,
        "a": by_model.get(str(paths[0])),
        "b": by_model.get(str(paths[1])),
    }
