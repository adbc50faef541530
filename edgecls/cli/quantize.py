"""``edgecls quantize``: INT8/FP16 held to an accuracy budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecls.cli.app import JsonOption, app, console, require_workstation, run, styled

QAT_EPOCHS, QAT_LR = 12, 3e-5  # = edgecls.quantize.config's (not imported: this module loads without TensorFlow)

EVAL_DATA_HELP = (
    "A folder of <label>/ images (scored whole), or digits / the training folder (its held-out split): "
    "float vs quantized top-1, held to --max-drop."
)


@app.command()
def quantize(
    model: Annotated[
        Path, typer.Argument(help="A trained .keras model (TFLite and ONNX), or a float .onnx (ONNX only).")
    ],
    int8: Annotated[
        bool, typer.Option("--int8", help="Full-integer INT8 with calibration images (the default).")
    ] = False,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="FP16 weights instead (TFLite, for GPU delegates / Jetson).")
    ] = False,
    calib: Annotated[
        Path | None,
        typer.Option(
            "--calib",
            help="Calibration folder: <class>/ subfolders of images like the training data (see `edgecls calib-data`).",
        ),
    ] = None,
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="Comma list of tflite, onnx (default: both for INT8, tflite for FP16)."),
    ] = "",
    calib_size: Annotated[
        int, typer.Option("--calib-size", help="Calibration images used, sampled stratified by class.")
    ] = 300,
    seed: Annotated[int, typer.Option(help="Seed for the calibration sample.")] = 0,
    method: Annotated[
        str, typer.Option(help="ONNX calibration: minmax, percentile or entropy (LiteRT always uses min/max).")
    ] = "minmax",
    per_channel: Annotated[
        bool, typer.Option("--per-channel/--per-tensor", help="Weight scales per output channel or per tensor.")
    ] = True,
    io: Annotated[
        str,
        typer.Option(
            "--io",
            help=(
                "TFLite input/output type: int8 (fast XNNPACK kernels), uint8 (camera bytes in, no float math) "
                "or float."
            ),
        ),
    ] = "int8",
    eval_data: Annotated[
        str | None,
        typer.Option(
            "--eval-data",
            help=EVAL_DATA_HELP,
        ),
    ] = None,
    max_drop: Annotated[
        float, typer.Option("--max-drop", help="Top-1 points INT8 may lose; beyond it the worst layers stay float.")
    ] = 1.0,
    max_float_layers: Annotated[
        int, typer.Option("--max-float-layers", help="At most this many tensors kept in float by the budget.")
    ] = 5,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            "-t",
            help=(
                "Device the ONNX INT8 is for (see `edgecls targets`, or a target .toml): a Jetson gets "
                "the symmetric 8-bit Q/DQ TensorRT builds as INT8; others the CPU scheme (7-bit weights)."
            ),
        ),
    ] = None,
    qat: Annotated[
        bool,
        typer.Option(
            "--qat",
            help="Quantization-aware training first: fake quantization as the converter quantizes, a brief "
            "fine-tune on --data's training split with the float model as teacher, then INT8 of the QAT model "
            "(the report shows PTQ beside it).",
        ),
    ] = False,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="--qat's training data (its training split); default: the model's own."),
    ] = None,
    qat_epochs: Annotated[int, typer.Option("--qat-epochs", help="--qat: fine-tuning epochs.")] = QAT_EPOCHS,
    qat_lr: Annotated[float, typer.Option("--qat-lr", help="--qat: initial learning rate (cosine decay).")] = QAT_LR,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: beside the model).")] = None,
    json: JsonOption = False,
) -> None:
    """INT8 (or FP16) TFLite/ONNX with calibration data, held to an accuracy budget."""
    require_workstation()
    from edgecls.base.errors import ConfigError
    from edgecls.cli.train import epoch_progress
    from edgecls.quantize import QuantizeConfig
    from edgecls.quantize import quantize as quantize_model
    from edgecls.quantize.config import onnx_scheme_for

    def call():
        if int8 and fp16:
            raise ConfigError("choose one of --int8 and --fp16")
        config = QuantizeConfig(
            onnx_scheme=onnx_scheme_for(target) if target else "cpu",
            precision="fp16" if fp16 else "int8",
            calib=str(calib) if calib else None,
            formats=tuple(part.strip() for part in format.split(",") if part.strip()),
            calib_size=calib_size,
            seed=seed,
            method=method,
            per_channel=per_channel,
            io=io,
            eval_data=eval_data,
            max_drop=max_drop,
            max_float_layers=max_float_layers,
            out=str(out) if out else None,
            qat=qat,
            qat_data=data,
            qat_epochs=qat_epochs,
            qat_lr=qat_lr,
        )
        # --qat's fine-tuning draws its epochs on stderr (the rest of quantize takes minutes, QAT most of it)
        callbacks = [epoch_progress(qat_epochs)] if qat and not fp16 else []
        result = quantize_model(model, config, callbacks=callbacks)
        if target and not fp16:
            result.warnings += _target_warnings(target)
        return result

    run(call, as_json=json, render=_render_quantize)


def _target_warnings(target: str) -> list[str]:
    from edgecls.runtime.targets import get_target

    profile = get_target(target)
    if "int8" in profile.precisions:
        return []
    return [
        f"{profile.name} lists no INT8 ({', '.join(profile.precisions)}): its GPU runs the FP32 ONNX as FP16 "
        "(TensorRT builds it); the INT8 artifacts are for its CPU"
    ]


def _render_quantize(result) -> None:
    from rich.table import Table

    out = console()
    if result.calibration:
        calibration = result.calibration
        out.print(
            f"calibration: {calibration['n_images']} images from {calibration['folder']} "
            f"(manifest {calibration['manifest']})"
        )
    if result.float_top1 is not None:
        scope = f"{result.eval_scope}, {result.n_eval_skipped} skipped"
        scored = f"{result.n_eval_images} images of {result.eval_data} ({scope})"
        out.print(f"float top-1 {result.float_top1:.2%} on {scored}; budget {result.max_drop:.2f} points")
    if result.qat:
        qat = result.qat
        keras_top1 = f", QAT Keras top-1 {qat['keras_top1']:.2%}" if "keras_top1" in qat else ""
        out.print(
            f"QAT: {qat['epochs']} epoch{'s' if qat['epochs'] != 1 else ''} on {qat['n_images']} training images "
            f"of {qat['data']} "
            f"(learning rate {qat['learning_rate']:g}, {qat['seconds']:.0f} s){keras_top1}"
        )
    columns = ("artifact", "precision", "I/O", "size", "× FP32", "top-1", "drop", "agreement", "kept float")
    table = Table(*columns, *(("PTQ top-1", "= QAT Keras") if result.qat else ()))
    for artifact in result.artifacts:
        extra = (
            (
                "n/a" if artifact.ptq_top1 is None else f"{artifact.ptq_top1:.2%}",
                "n/a" if artifact.qat_agreement is None else f"{artifact.qat_agreement:.2%}",
            )
            if result.qat
            else ()
        )
        table.add_row(
            Path(artifact.path).name,
            artifact.precision,
            artifact.io,
            f"{artifact.size_bytes / 1024:.0f} KiB",
            f"{artifact.size_ratio:.2f}",
            "n/a" if artifact.top1 is None else f"{artifact.top1:.2%}",
            "n/a" if artifact.drop is None else f"{artifact.drop:.2f}",
            "n/a" if artifact.agreement is None else f"{artifact.agreement:.2%}",
            ", ".join(artifact.float_layers) or "—",
            *extra,
        )
    out.print(table)
    for message in result.warnings:
        out.print(styled("warning:", "yellow"), message)
    out.print(f"written to {Path(result.report_markdown).parent}/ (report {Path(result.report_markdown).name})")
