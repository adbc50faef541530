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
            job.keras_model, job.calibration, job.info, io=config.io, per_channel=config.per_channel, scratch=scratch
        )
    else:
        from edgecls.quantize.onnx import requantizer_for, write_float_onnx

        float_path = scratch / "float.onnx"
        requantizer = requantizer_for(job, float_path, write_float_onnx(job.keras_model, float_path), scratch)
    artifact.ptq_top1, _ = job.evaluation.score(requantizer.quantize(frozenset()))
