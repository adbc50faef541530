"""The quantize report: JSON (what ``--json`` prints) and Markdown, beside the artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecls.base.fileio import write_json, write_text


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def write_reports(result: Any, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>_quantize.json`` and ``<stem>_quantize.md``; return both paths."""
    json_path = out_dir / f"{stem}_quantize.json"
    markdown_path = out_dir / f"{stem}_quantize.md"
    result.report_json, result.report_markdown = str(json_path), str(markdown_path)
    write_json(json_path, result.to_dict())
    write_text(markdown_path, markdown(result))
    return json_path, markdown_path


def markdown(result: Any) -> str:
    """A human-readable account of a ``QuantizeResult``."""
    lines = [f"# Quantization of `{result.model}`", ""]
    calibration = result.calibration
    if calibration:
        lines += [
            f"Calibration: {calibration['n_images']} images from `{calibration['folder']}` (seed "
            f"{calibration['seed']}, manifest `{Path(calibration['manifest']).name}`, sha256 "
            f"`{calibration['manifest_sha256'][:12]}…`); ONNX method {calibration['method']}, TFLite min/max; "
            f"{'per-channel' if calibration['per_channel'] else 'per-tensor'} weights.",
            "",
        ]
    if result.eval_data:
        lines += [
            f"Evaluation: {result.n_eval_images} images of `{result.eval_data}` ({result.eval_scope}, "
            f"{result.n_eval_skipped} skipped as not decodable); "
            f"float top-1 {_percent(result.float_top1)}; budget: at most {result.max_drop:.2f} points lost.",
            "",
        ]
    else:
        lines += [
            "Evaluation: none (pass `--eval-data` to measure accuracy and hold INT8 to the `--max-drop` budget).",
            "",
        ]
    if result.qat:
        lines += qat_lines(result)
    lines += [
        "| artifact | format | precision | I/O | size | × FP32 | top-1 | drop (points) | agreement | layers kept float "
        "| time |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for artifact in result.artifacts:
        lines.append(
            f"| `{Path(artifact.path).name}` | {artifact.format} | {artifact.precision} | {artifact.io} | "
            f"{artifact.size_bytes:,} B | {artifact.size_ratio:.3f} | {_percent(artifact.top1)} | "
            f"{_points(artifact.drop)} | {_percent(artifact.agreement)} | {', '.join(artifact.float_layers) or '—'} | "
            f"{artifact.seconds:.1f} s |"
        )
    for artifact in result.artifacts:
        if not artifact.worst_layers and len(artifact.attempts) <= 1:
            continue
        lines += ["", f"## `{Path(artifact.path).name}`", ""]
        if artifact.worst_layers:
            lines += [
                "Largest quantization errors (per-channel relative error of each activation tensor rounded alone to "
                "INT8; accumulated: INT8 model vs float model at that tensor), on calibration images:",
                "",
                "| layer | op | error | accumulated | tensor |",
                "|---|---|---:|---:|---|",
            ]
            for item in artifact.worst_layers:
                accumulated = "n/a" if item.accumulated is None else f"{item.accumulated:.4f}"
                lines.append(
                    f"| {', '.join(item.layers) or '?'} | {item.op_type} | {item.error:.4f} | {accumulated} | "
                    f"`{item.tensor[:80]}` |"
                )
        if len(artifact.attempts) > 1:
            lines += [
                "",
                "Accuracy budget, attempt by attempt:",
                "",
                "| kept in float | top-1 | drop (points) |",
                "|---|---:|---:|",
            ]
            for attempt in artifact.attempts:
                lines.append(
                    f"| {', '.join(attempt.float_layers) or 'nothing (plain INT8)'} | {_percent(attempt.top1)} | "
                    f"{_points(attempt.drop)} |"
                )
            verdict = "within" if artifact.within_budget else "NOT within"
            lines += [
                "",
                f"Result: {verdict} the budget of {result.max_drop:.2f} points; kept in float: "
                f"{', '.join(artifact.float_layers) or 'nothing'}.",
            ]
    if result.warnings:
        lines += ["", "## Warnings", ""] + [f"- {message}" for message in result.warnings]
    lines += ["", f"Total time {result.seconds:.1f} s on {result.host}.", ""]
    return "\n".join(lines)


def qat_lines(result: Any) -> list[str]:
    """The QAT section: how it trained, and float / PTQ / QAT top-1 side by side per format."""
    qat = result.qat
    placement = qat.get("placement", {})
    lines = [
        f"Quantization-aware training: {qat['epochs']} epoch{'s' if qat['epochs'] != 1 else ''} on "
        f"{qat['n_images']} images of the training split of "
        f"`{qat['data']}` (learning rate {qat['learning_rate']:g}, cosine decay; augment "
        f"{', '.join(qat['augment']) or 'none'}; range EMA decay {qat['ema_decay']}; {qat['seconds']:.0f} s), "
        f"{qat['weights']} weights, {qat['activations']} activations; "
        f"{len(placement.get('folded_batchnorms', []))} BatchNorm folded, "
        f"{placement.get('activation_quantizers', 0)} activation and {placement.get('fake_quantized_weights', 0)} "
        "weight fake-quantizers. The last epoch is kept (no choice on the evaluation images).",
        "",
    ]
    if result.eval_data:
        lines += [
            "| format | float top-1 | PTQ top-1 (plain) | QAT Keras top-1 | QAT INT8 top-1 | QAT INT8 = QAT Keras |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for artifact in result.artifacts:
            lines.append(
                f"| {artifact.format} | {_percent(result.float_top1)} | {_percent(artifact.ptq_top1)} | "
                f"{_percent(qat.get('keras_top1'))} | {_percent(artifact.top1)} | {_percent(artifact.qat_agreement)} |"
            )
        lines.append("")
    return lines
