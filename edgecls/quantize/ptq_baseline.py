"""The quantize report's side-by-side under ``--qat``: plain post-training INT8 of the float model, in the same
format, weights and scheme as each QAT artifact, and each artifact's agreement with the QAT Keras model.

Apart from ``qat.py`` because it runs both format paths (``tflite``, ``onnx``) and ``onnx`` reads ``qat``'s ranges:
here neither imports the other.
"""

from __future__ import annotations

from edgecls.quantize.qat import keras_agreement


def compare_with_ptq(artifact, job) -> None:
    """Fill ``artifact``'s ``ptq_top1`` (plain post-training INT8 of the float model, same format, weights and
    scheme, nothing kept float) and ``qat_agreement`` (with the QAT Keras model), on the evaluation images."""
    if job.evaluation is None or job.qat is None:
        return
    artifact.qat_agreement = keras_agreement(job.qat, artifact.path, job.evaluation)
    scratch = job.work / "ptq"
    scratch.mkdir(exist_ok=True)
    config = job.config
    if artifact.format == "tflite":
        from edgecls.quantize.tflite import TFLiteRequantizer

        requantizer = TFLiteRequantizer(
            job.keras_model,
            job.calibration,
            job.info,
            io=config.io,
            per_channel=config.per_channel,
            scratch=scratch,
            source=job.litert,  # the float model's SavedModel, written for the FP32 size already
        )
    else:
        from edgecls.quantize.onnx import requantizer_for, write_float_onnx

        float_path = scratch / "float.onnx"
        requantizer = requantizer_for(job, float_path, write_float_onnx(job.keras_model, float_path), scratch)
    artifact.ptq_top1, _ = job.evaluation.score(requantizer.quantize(frozenset()))


def qat_below_ptq(artifact, n_images: int) -> str | None:
    """The warning when the QAT artifact scores below plain PTQ of the same format on the evaluation images.

    QAT's fine-tune is short and its outcome varies from run to run (measured: EfficientNet-B0 on photos10,
    the same model and defaults, QAT Keras top-1 91.5 % in one run and 90.6 % in another against PTQ's 91.4 %):
    the user should know when the run at hand did not pay.
    """
    if artifact.top1 is None or artifact.ptq_top1 is None or artifact.top1 >= artifact.ptq_top1:
        return None
    images = round((artifact.ptq_top1 - artifact.top1) * n_images)
    return (
        f"{artifact.path}: QAT top-1 {artifact.top1:.2%} is below plain post-training INT8's "
        f"{artifact.ptq_top1:.2%} on the same {n_images} images ({images} image(s)): QAT did not help here; "
        "quantize without --qat, or retry with other --qat-epochs/--qat-lr"
    )
