"""The deployed candidate: which artifact of a run a device gets, and the INT8 artifacts slower than their float one.

A user quantizes to INT8 to be faster, and INT8 is not faster by construction (an INT8 MobileNetV3-Small TFLite ran
slower than its FP32 under XNNPACK on an x86 host). So where a [bench] target timed the artifacts on the device
itself, the candidate is the fastest TFLite within the accuracy budget; the report flags every INT8 artifact slower
than its float sibling on a target (``edgecls.bench.siblings``).
"""

from __future__ import annotations

from typing import Any

from edgecls.pipeline.config import PipelineConfig


def quantize_max_drop(config: PipelineConfig) -> float:
    """The accuracy budget the run holds artifacts to: [quantize] max_drop, else quantize's default."""
    from edgecls.quantize.config import QuantizeConfig

    return float(config.stages.get("quantize", {}).get("max_drop", QuantizeConfig.max_drop))


def deployment_target(rows: list[dict[str, Any]]) -> str | None:
    """The first [bench] target measured on its own device (``host`` here; a Pi over SSH), else None."""
    for row in rows:
        for target, figures in row.get("latency", {}).items():
            if figures.get("on_target") and not figures.get("via"):
                return target
    return None


def deployed_artifact(rows: list[dict[str, Any]], *, max_drop: float = 1.0) -> dict[str, Any] | None:
    """The artifact a device would get: a TFLite within the accuracy budget (top-1 at most ``max_drop`` points
    under the FP32 Keras model), the fastest where a [bench] target measured on its own device timed them (an INT8
    slower than its float sibling there loses to it), else the INT8 TFLite if made, else the smallest."""
    tflite = [row for row in rows if row["format"] == "tflite"]
    within = [row for row in tflite if row.get("top1_change") is None or row["top1_change"] >= -max_drop] or tflite
    target = deployment_target(within)
    timed = [row for row in within if target in row.get("latency", {})]
    if timed:
        return min(timed, key=lambda row: row["latency"][target]["p50"])
    int8 = [row for row in within if row["precision"] == "int8"]
    pool = int8 or within
    return min(pool, key=lambda row: row["size_bytes"]) if pool else None


def slower_int8_warnings(rows: list[dict[str, Any]], targets: list[str], labels: dict[str, str]) -> list[str]:
    """One line per INT8 artifact slower than its float sibling (same format, same source model) on a target;
    ``labels``: each artifact's name in the report table."""
    from edgecls.bench.siblings import slower_than_siblings

    lines = []
    for target in targets:
        measured = [
            (row["path"], row["precision"], row["latency"][target]["p50"])
            for row in rows
            if row["format"] != "keras" and target in row["latency"]
        ]
        for item in slower_than_siblings(measured):
            lines.append(
                f"{labels[item.model]} is slower than its float sibling {labels[item.sibling]} on {target} "
                f"({item.int8_p50_ms:.3f} vs {item.float_p50_ms:.3f} ms p50)"
            )
    return lines
