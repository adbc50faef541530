"""Quantization-aware training: the QAT twin of a Keras model, its ranges, its brief fine-tuning, its ONNX ranges.

``train_qat`` runs the parts in order:

1. ``qat_graph.build_qat_model``: fake quantization where the LiteRT converter
   quantizes, BatchNorm folded, weights per channel (or per tensor);
2. ``initialize_ranges``: every activation range starts where the moving
   average will track it, the mean over calibration batches of each batch's
   min/max through the float model (the whole set's min/max, what the
   converter's calibration takes, measured worse on EfficientNet-B0: 95.6 %
   vs 96.7 % top-1 agreement with float before any training);
3. ``finetune``: a few epochs on the training split at a low learning rate
   (Adam, cosine decay), the float model as teacher: the loss is the
   cross-entropy to its softmax on the same augmented batch (``qat_augment``:
   RandAugment on top of ``edgecls train``'s flips, rotations and zooms; the QAT model
   learns to compute what the float model computes, not to fit the labels
   again; on photos10 fine-tuning to the labels lost held-out top-1 with or
   without fake quantization), dropout off (the teacher has none either).
   Ranges are tracked as an exponential moving average with the decay
   ``models.bn_momentum_for(steps)`` gives a BatchNorm over the same steps
   (the old range weighs e^-10 at the end, at most 0.99 per step); no model
   selection on the evaluation images: the last epoch is kept;
4. ``snap_to_grid``: the folded weights written onto their INT8 (kernel) and
   INT32 (bias) levels, so that the converter and ONNX Runtime round none of
   them another way than the QAT model does.

The format paths then convert the QAT model: TFLite through the LiteRT
converter, which reads the fake-quant ops' ranges (``quantize.tflite``); ONNX
from ``qat_graph.deploy_model`` (the folded float weights) through
``onnxruntime.quantization`` with each learned range pinned by
``TensorQuantOverrides`` (``onnx_ranges``, tensors matched by value). Where the
accuracy budget keeps TFLite layers in float, the same folded weights are
calibrated by the converter and given the learned ranges as statistics
(``tflite_ranges``; see ``quantize.tflite.QatTFLiteRequantizer``).

>>> run = train_qat(model, info, config, calibration, evaluation)  # doctest: +SKIP
>>> run.record["keras_top1"]  # doctest: +SKIP
0.861
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.base.errors import ConfigError
from edgecls.quantize.calibration import CalibrationSet
from edgecls.quantize.qat_graph import Placement, activation_quantizers, build_qat_model
from edgecls.runtime.metadata import ModelInfo

log = logging.getLogger(__name__)

BATCH_SIZE = 64  # edgecls train's default: the BatchNorm statistics folded in were gathered at this batch size
RANGE_BATCH = 32  # calibration images per forward pass while the ranges are observed
# On photographs QAT's batches also go through Keras' RandAugment (``--augment randaugment``'s). Screened on the
# QAT benchmark's EfficientNet-B0s (photos10, 3 seeds, per channel, 6 epochs at 3e-5; QAT Keras top-1 on the held-out
# val split, where the float models score 88.39 % on the mean): flip/rotate/zoom alone 87.39 %, with RandAugment
# 88.50 %, with the camera corruptions (``robust``) 88.28 %; with both, seeds 0 and 2 only, 85.50 % against 86.75 % for
# RandAugment alone. QAT matched the teacher on 99.6 % of its plain training images but on 96-98.5 % of unseen ones:
# the misses are close calls, and stronger augmentation puts such inputs in front of it (function matching, Beyer
# et al. 2022, arXiv 2106.05237).
QAT_EXTRA_AUGMENT = ("randaugment",)


@dataclass
class QatRun:
    """A trained QAT model and what was done to make it."""

    model: Any  # the Keras QAT model (fake-quant ops inside)
    placement: Placement
    symmetric: bool  # activations with zero point 0 (the TensorRT scheme)
    per_channel: bool
    record: dict[str, Any] = field(default_factory=dict)  # data, epochs, learning rate, history, top-1, seconds
    predictions: np.ndarray | None = None  # the QAT Keras model's classes on the evaluation images


def initialize_ranges(model, images: np.ndarray, *, batch: int = RANGE_BATCH) -> int:
    """Set every tracked activation range to the mean over ``batch``-image batches of ``images`` of each batch's
    min and max through the float (unrounded) model: what the moving average tracks during training.

    Returns how many ranges were set. The quantizers are off while observing,
    so each range is the float model's. ``batch=len(images)`` gives the whole
    set's min/max, post-training calibration's range (QAT step 0 = PTQ).
    """
    import keras

    quantizers = [q for q in activation_quantizers(model) if q.fixed is None]
    if not quantizers:
        return 0
    for quantizer in activation_quantizers(model):
        quantizer.active = False
    try:
        probe = keras.Model(model.inputs, [quantizer.input for quantizer in quantizers])
        lows, highs = [], []
        for start in range(0, len(images), batch):
            outputs = probe([images[start : start + batch].astype(np.float32)], training=False)  # its inputs: a list
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            values = [keras.ops.convert_to_numpy(value) for value in outputs]
            lows.append([float(value.min()) for value in values])
            highs.append([float(value.max()) for value in values])
        # weighted by batch size: a short last batch counts for its images
        weights = [len(images[start : start + batch]) for start in range(0, len(images), batch)]
        low = np.average(np.asarray(lows), axis=0, weights=weights)
        high = np.average(np.asarray(highs), axis=0, weights=weights)
    finally:
        for quantizer in activation_quantizers(model):
            quantizer.active = True
    for quantizer, lo, hi in zip(quantizers, low, high):
        quantizer.set_range(lo, hi)
    return len(quantizers)


def snap_to_grid(model) -> int:
    """Every ``QuantConv``'s folded weights written onto their levels (``QuantConv.snap_to_grid``), once training is
    over: the converter and ONNX Runtime then round no weight another way. Returns how many kernel values lay
    within a hundredth of a step of a rounding boundary."""
    from edgecls.quantize.fake_quant import QuantConv

    near = sum(layer.snap_to_grid() for layer in model.layers if isinstance(layer, QuantConv))
    log.info("QAT weights written onto their INT8 levels (%d lay within 0.01 step of a rounding boundary)", near)
    return near


def set_decay(model, decay: float) -> None:
    """The EMA decay of every tracked range (read when the training step is traced)."""
    for quantizer in activation_quantizers(model):
        quantizer.decay = float(decay)


def finetune(
    model,
    train,
    *,
    teacher,
    epochs: int,
    learning_rate: float,
    seed: int,
    augment: tuple[str, ...] = (),
    callbacks: Sequence[Any] = (),
    batch_size: int = BATCH_SIZE,
) -> dict[str, list[float]]:
    """Train the QAT ``model`` on ``train`` (an ``ImageSet``) for ``epochs`` to match ``teacher``; returns Keras'
    history.

    Adam with a cosine-decaying learning rate to 1 % (``edgecls train``'s
    schedule); the loss is the cross-entropy between the teacher's softmax
    (inference mode) and the QAT model's, on the same augmented batch, and
    ``accuracy`` is their top-1 agreement. The QAT model's dropout is off
    while it trains. No validation and no best-epoch choice: the evaluation
    images stay unseen by QAT.
    """
    import keras

    from edgecls.data import to_tf_dataset

    keras.utils.set_random_seed(seed)
    steps = math.ceil(len(train) / batch_size) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps), alpha=0.01)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=schedule),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    data = to_tf_dataset(train, batch_size=batch_size, training=True, seed=seed, augment=augment)
    data = data.map(lambda images, _labels: (images, teacher(images, training=False)))
    rates = _dropout_off(model)
    try:
        history = model.fit(data, epochs=epochs, verbose=0, shuffle=False, callbacks=list(callbacks))
    finally:
        for layer, rate in rates:
            layer.rate = rate
    return {key: [round(float(v), 6) for v in values] for key, values in history.history.items()}


def _dropout_off(model) -> list[tuple[Any, float]]:
    """Set every Dropout layer's rate to 0 (read when the training step is traced); returns the old rates."""
    import keras

    rates = [(layer, layer.rate) for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    for layer, _ in rates:
        layer.rate = 0.0
    return rates


def qat_augment(data: str) -> tuple[str, ...]:
    """What QAT's training batches go through: ``edgecls train``'s ``auto`` (flip, rotate, zoom; none for digits)
    plus, on photographs, RandAugment (``QAT_EXTRA_AUGMENT``).

    The teacher's output is a valid target on any input, so stronger augmentation costs no label noise here; it
    gives the QAT model the close calls that the few training images lack (see ``QAT_EXTRA_AUGMENT``).
    """
    from edgecls.data import parse_augment

    geometric = parse_augment("auto", data)
    return (*geometric, *QAT_EXTRA_AUGMENT) if geometric else geometric


def training_split(info: ModelInfo, data: str):
    """The data set of ``data`` as the model's own run split it (``val/`` folder, or its seed and fraction, the
    file list checked against the recorded digest: ``evaluate.validation_set``); QAT trains on its ``train``."""
    from edgecls.evaluate import validation_set

    _, dataset = validation_set(info, data)  # a folder of other classes than the model's: DataError there
    return dataset


def train_qat(
    model, info: ModelInfo, config, calibration: CalibrationSet, evaluation=None, *, callbacks: Sequence[Any] = ()
) -> QatRun:
    """The QAT model of ``model``, fine-tuned on ``config.qat_data`` as ``config`` says (see the module's doc);
    ``callbacks`` (Keras callbacks, e.g. a progress bar) go to its fit."""
    from edgecls.models import bn_momentum_for

    started = time.time()
    data = config.qat_data or info.provenance.get("dataset")
    if not data:
        raise ConfigError("--qat needs training images: pass --data FOLDER (the model records no data set)")
    dataset = training_split(info, data)
    train = dataset.train
    steps = math.ceil(len(train) / BATCH_SIZE) * config.qat_epochs
    decay = bn_momentum_for(steps)
    symmetric = config.onnx_scheme == "tensorrt"
    qat, placement = build_qat_model(model, per_channel=config.per_channel, symmetric=symmetric, decay=decay)
    initialized = initialize_ranges(qat, calibration.images)
    augment = qat_augment(data)
    warnings: list[str] = []
    if evaluation is not None:
        seen = {image.tobytes() for image in train.images}
        overlap = sum(image.tobytes() in seen for image in evaluation.images.images)
        if overlap:
            warnings.append(
                f"{overlap} of {evaluation.size} evaluation images are QAT training images: the QAT top-1 is "
                "optimistic; evaluate on held-out images"
            )
            log.warning("%s", warnings[-1])
    log.info(
        "QAT: %d epochs on %d images of %s at learning rate %g (EMA decay %.4f)",
        config.qat_epochs,
        len(train),
        data,
        config.qat_lr,
        decay,
    )
    history = finetune(
        qat,
        train,
        teacher=model,
        epochs=config.qat_epochs,
        learning_rate=config.qat_lr,
        seed=config.seed,
        augment=augment,
        callbacks=callbacks,
    )
    near_ties = snap_to_grid(qat)
    run = QatRun(qat, placement, symmetric, config.per_channel)
    run.record = {
        "data": str(data),
        "split": "train",
        "n_images": len(train),
        "epochs": config.qat_epochs,
        "learning_rate": config.qat_lr,
        "batch_size": BATCH_SIZE,
        "augment": list(augment),
        "loss": "cross-entropy to the float model's softmax (teacher), dropout off",
        "ema_decay": round(decay, 6),
        "ranges_from_calibration": initialized,
        "weights": "per-channel" if config.per_channel else "per-tensor",
        "activations": "symmetric int8 (zero point 0)" if symmetric else "asymmetric int8",
        "placement": placement.to_dict(),
        "history": history,
        "weights_near_a_rounding_boundary": near_ties,
        "warnings": warnings,
    }
    if evaluation is not None:
        from edgecls.evaluate import predict_scores

        run.predictions = predict_scores(qat, evaluation.images).argmax(axis=1)
        run.record["keras_top1"] = float(np.mean(run.predictions == evaluation.labels))
    run.record["seconds"] = round(time.time() - started, 2)
    return run


# --- the learned ranges in the ONNX graph, and in the calibrated TFLite graph the budget uses -----


MATCH_IMAGES = 4  # calibration images the float Keras and the float ONNX or TFLite tensors are compared on
MATCH_RTOL = 1e-3  # relative to the tensor's largest value: TF, LiteRT and ONNX Runtime kernels differ by ~1e-6


def onnx_ranges(run: QatRun, deploy, taps: dict[str, Any], onnx_path, images: np.ndarray, scratch) -> dict:
    """``TensorQuantOverrides`` for ``onnxruntime.quantization``: each QAT range pinned on its ONNX tensor(s).

    ``deploy`` is ``qat_graph.deploy_model(run.model, taps=taps)`` and ``onnx_path``
    its (pre-processed) float ONNX. tf2onnx renames what it rewrites (a swish's
    Sigmoid and Mul lose their layer's name), so tensors are matched by value:
    each quantizer's input in ``deploy`` and every ONNX tensor on the same
    images; a range goes on every tensor that holds those values (a Transpose or
    Reshape after it carries the same grid). Where a Relu/Clip's input comes from
    a Conv/Gemm/MatMul/Add that feeds nothing else, that input gets the range
    too: ONNX Runtime folds such an activation into the tensor before it.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    batch = images[:MATCH_IMAGES].astype(np.float32)
    quantizers, expected = _tapped_values(run.model, deploy, taps, batch)
    augmented = Path(scratch) / "float_all_tensors.onnx"
    modify_model_output_intermediate_tensors(str(onnx_path), str(augmented))
    session = ort.InferenceSession(str(augmented), providers=["CPUExecutionProvider"])
    suffix = "_ReshapedSavedOutput"  # what ORT's helper appends to each saved tensor (flattened, order kept)
    names = [output.name.removesuffix(suffix) for output in session.get_outputs()]
    values = dict(zip(names, session.run(None, {session.get_inputs()[0].name: batch})))
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producers = {output: node for node in graph.node for output in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for tensor in node.input:
            readers[tensor] = readers.get(tensor, 0) + 1
    overrides: dict[str, list[dict[str, Any]]] = {}
    missing = []
    for quantizer, value in zip(quantizers, expected):
        tensors = _same_values(value, values)
        if not tensors:
            missing.append(quantizer.name)
            continue
        scale, zero_point = quantizer.quant_params()
        entry = [
            {"scale": np.array(scale, np.float32), "zero_point": np.array(0 if run.symmetric else zero_point, np.int8)}
        ]
        for tensor in tensors:
            overrides[tensor] = entry
            producer = producers.get(tensor)
            if producer is not None and producer.op_type in ("Relu", "Clip") and producer.input:
                before = producers.get(producer.input[0])
                fused = before is not None and before.op_type in ("Conv", "Gemm", "MatMul", "Add")
                if fused and readers.get(producer.input[0], 0) == 1:
                    overrides[producer.input[0]] = entry
    if missing:
        log.warning("no ONNX tensor holds %d QAT range(s)' values (%s): calibrated instead", len(missing), missing[:5])
    return overrides


def tflite_ranges(model, deploy, taps: dict[str, Any], calibrated: bytes, images: np.ndarray) -> dict[str, tuple]:
    """Tensor name → the (min, max) a QAT range gives it, in ``calibrated``: the LiteRT converter's calibrated
    float model of ``deploy`` (``qat_graph.deploy_model(model, taps=taps)``).

    Tensors are matched by value, as in ``onnx_ranges``: each quantizer's input in ``deploy`` and every tensor of
    ``calibrated`` run by LiteRT on the same images (a conv's fused activation is one tensor in TFLite).
    """
    from ai_edge_litert.interpreter import Interpreter

    batch = images[:MATCH_IMAGES].astype(np.float32)
    quantizers, expected = _tapped_values(model, deploy, taps, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging": it is what this is
        interpreter = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True)
    details = interpreter.get_tensor_details()
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], batch.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
    interpreter.invoke()
    values = {}
    for detail in details:
        try:
            values[detail["name"]] = interpreter.get_tensor(detail["index"])
        except ValueError:  # a tensor LiteRT holds no data for (an unused intermediate)
            continue
    ranges: dict[str, tuple] = {}
    missing = []
    for quantizer, value in zip(quantizers, expected):
        tensors = _same_values(value, values)
        if not tensors:
            missing.append(quantizer.name)
        low, high = (float(bound) for bound in quantizer.bounds(quantizer.range_min, quantizer.range_max))
        ranges.update({tensor: (low, high) for tensor in tensors})
    if missing:
        log.warning(
            "no TFLite tensor holds %d QAT range(s)' values (%s): calibrated instead", len(missing), missing[:5]
        )
    return ranges


def _tapped_values(model, deploy, taps: dict[str, Any], batch: np.ndarray) -> tuple[list, list[np.ndarray]]:
    """The quantizers of ``model`` that ``taps`` holds, and the tensor each rounds, computed by ``deploy`` on
    ``batch``."""
    import keras

    quantizers = [quantizer for quantizer in activation_quantizers(model) if quantizer.name in taps]
    expected = keras.Model(deploy.inputs, [taps[quantizer.name] for quantizer in quantizers]).predict(batch, verbose=0)
    return quantizers, expected if isinstance(expected, list) else [expected]


def _same_values(value: np.ndarray, tensors: dict[str, np.ndarray]) -> list[str]:
    """ONNX or TFLite tensors equal to a Keras (NHWC) tensor, in NHWC or NCHW (ONNX) order."""
    layouts = [value.reshape(-1)]
    if value.ndim == 4:
        layouts.append(np.transpose(value, (0, 3, 1, 2)).reshape(-1))
    tolerance = MATCH_RTOL * max(float(np.abs(value).max()), 1e-6)
    found = []
    for name, other in tensors.items():
        if not isinstance(other, np.ndarray) or other.size != value.size or other.dtype.kind != "f":
            continue
        flat = other.reshape(-1)
        if any(float(np.abs(flat - layout).max()) <= tolerance for layout in layouts):
            found.append(name)
    return found


def keras_agreement(run: QatRun, artifact_path, evaluation) -> float | None:
    """Share of evaluation images where an artifact (through the runtime) and the QAT Keras model agree."""
    if run.predictions is None or evaluation is None:
        return None
    from edgecls.evaluate import predict_scores

    predictions = predict_scores(Path(artifact_path), evaluation.images).argmax(axis=1)
    return float(np.mean(predictions == run.predictions))
