"""The LiteRT (TensorFlow Lite) converter's private entry points, in one place.

INT8 conversion in ``TFLiteConverter.convert`` is two steps: calibrate (run the
representative dataset through the float model, record ranges), then quantize
the calibrated model. The accuracy budget re-quantizes one calibrated model
many times with different layers kept in float, and per-tensor weights are an
option; no public converter API offers either, so this module reaches past it,
as LiteRT's own ``QuantizationDebugger`` does. Each private is named here with
why no public API serves; TensorFlow is imported inside the functions only.

Keras' LiteRT exporter (``model.export(format="litert")``) writes a SavedModel
and converts it in one call; a model converted more than once (FP32 for its
size, INT8, calibration) would write that SavedModel each time, most of a
conversion's time. ``write_saved_model`` and ``convert_saved_model`` are its two
halves, so that one SavedModel serves every conversion of a model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def write_saved_model(model, folder: Path) -> Path:
    """``model`` as the SavedModel Keras' LiteRT exporter converts from: an ``ExportArchive`` with one ``serve``
    endpoint, ``model.__call__(training=False)`` on the model's input signature.

    ``keras.src.export.litert.LiteRTExporter._convert_to_tflite`` writes it inside the conversion, to a
    temporary folder; ``keras.src.export.export_utils.get_input_signature`` is the signature it infers.
    """
    import functools

    import keras
    from keras.src.export.export_utils import get_input_signature

    signature = get_input_signature(model)
    if not isinstance(signature, (list, tuple)):  # one positional argument, as the exporter wraps it
        signature = [signature]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", functools.partial(model.__call__, training=False), input_signature=signature)
    archive.write_out(str(folder), verbose=False)
    return folder


def convert_saved_model(folder: Path, **converter_options: Any) -> bytes:
    """The LiteRT converter on a ``write_saved_model`` folder, set as Keras' exporter sets it (builtin and select
    TensorFlow ops, resource variables), then ``converter_options`` as ``model.export(format="litert", **options)``
    sets them (``LiteRTExporter._apply_converter_kwargs``: attributes, ``target_spec`` as a dict)."""
    import tensorflow as tf
    from keras.src.export.litert import LiteRTExporter

    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    converter.experimental_enable_resource_variables = True
    LiteRTExporter(model=None, **converter_options)._apply_converter_kwargs(converter)
    return converter.convert()


def tf_type(io: str):
    """The TensorFlow dtype of an ``--io`` name (int8 | uint8 | float)."""
    import tensorflow as tf

    return {"int8": tf.int8, "uint8": tf.uint8, "float": tf.float32}[io]


def per_tensor_options() -> dict[str, Any]:
    """Converter attributes that make weights per-tensor instead of per-channel.

    ``_experimental_disable_per_channel``: the converter has no public setting
    for per-tensor INT8 weights; this attribute is the one its own tests and
    the QuantizationDebugger use.
    """
    return {"_experimental_disable_per_channel": True}


def calibrate_saved_model(saved_model: Path, representative_dataset: Callable[[], Any]) -> bytes:
    """Step one alone: the float model with calibration statistics, from a SavedModel.

    ``_experimental_calibrate_only``: ``convert()`` calibrates and quantizes in one
    call, so every re-quantization would calibrate again (seconds per attempt);
    this flag stops after calibration, what ``QuantizationDebugger`` sets.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter._experimental_calibrate_only = True  # noqa: SLF001 - see the docstring
    return converter.convert()


def quantize_calibrated(
    calibrated: bytes,
    *,
    io: str = "int8",
    per_channel: bool = True,
    denylisted_nodes: Sequence[str] = (),
) -> bytes:
    """Step two: quantize a calibrated model, keeping ``denylisted_nodes`` (op output tensor names) in float.

    ``tensorflow.lite.python.convert.mlir_quantize``: the quantization step that
    ``convert()`` and ``QuantizationDebugger`` run after calibrating; no public
    function takes an already-calibrated model (each public route calibrates again).
    """
    from tensorflow.lite.python.convert import mlir_quantize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mlir_quantize(
            calibrated,
            disable_per_channel=not per_channel,
            input_data_type=tf_type(io),
            output_data_type=tf_type(io),
            denylisted_nodes=sorted(denylisted_nodes) or None,
        )


def numeric_verify_model(calibrated: bytes, *, per_channel: bool = True) -> bytes:
    """The debug model ``QuantizationDebugger`` reads: NumericVerify ops in whole-model mode, float I/O.

    ``mlir_quantize(enable_numeric_verify=True, enable_whole_model_verify=True)``:
    the debugger builds this model itself from a converter (calibrating again);
    it takes a ready one (``quant_debug_model_content``), and only the private
    function makes one from the calibrated model already at hand.
    """
    from tensorflow.lite.python.convert import mlir_quantize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mlir_quantize(
            calibrated, disable_per_channel=not per_channel, enable_numeric_verify=True, enable_whole_model_verify=True
        )
