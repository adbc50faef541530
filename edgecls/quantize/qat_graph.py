"""Where fake quantization goes: a Keras model rewritten into its QAT twin, placed as the converter quantizes.

The LiteRT converter gives each op's output tensor its own INT8 scale, after
fusing what it fuses; the QAT model rounds exactly those tensors
(``fake_quant.ActivationQuantizer``) and nothing in between:

- Conv2D / DepthwiseConv2D / Dense and the BatchNormalization after it are
  one op (``fake_quant.QuantConv``: BN folded, weights fake-quantized). A
  ReLU / ReLU6 after it, or after an Add / Subtract / Multiply, is fused into
  that op (TFLite's fused activation), and so is a constant added right after
  a convolution (folded into its bias: MobileNetV3's ``x + 3`` of the hard
  sigmoid). The quantizer goes after the last op of such a chain.
- Ops that keep their input's grid get none: max pooling, reshape, flatten,
  padding, dropout (TFMOT's ``_no_quantize`` list, checked against the
  converted graphs).
- Outputs the converter fixes get their fixed grid: sigmoid (LOGISTIC) and
  softmax (scale 1/256, zero point -128), tanh (1/128, 0).
- swish/silu is LOGISTIC then MUL in TFLite: a fixed quantizer on the sigmoid
  and a tracked one on the product.
- The pixel normalisation in front of the first convolution (``Rescaling``,
  ``Normalization``) is a MUL then an ADD in TFLite, two INT8 tensors: it
  becomes two ``Rescaling`` layers with a quantizer each. A scale alone
  straight into a convolution gets none: the converter folds it into the
  convolution's weights.
- Every other op's output (global average pooling, Add, Multiply,
  Concatenate, hard-swish, ...) gets a tracked quantizer.

The rewrite uses ``keras.models.clone_model`` with a ``call_function``
(public Keras): layers without weights are reused, other layers are cloned
with their weights, convolutions become ``QuantConv``.

>>> qat, placement = build_qat_model(model, per_channel=True)  # doctest: +SKIP
>>> placement.folded[:1]  # doctest: +SKIP
[('conv1', 'bn1')]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecls.adapters.keras_graph import functional_graph, graph_nodes, is_nested_model, is_ops_class, producer
from edgecls.base.errors import ModelError
from edgecls.quantize.fake_quant import LOGISTIC_RANGE, ActivationQuantizer, QuantConv, quant_params

log = logging.getLogger(__name__)

WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Dense")
# outputs on their input's grid: TFMOT's _no_quantize list (and what the converter gives the same scale)
PASSTHROUGH = (
    "InputLayer",
    "MaxPooling1D",
    "MaxPooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "Reshape",
    "Flatten",
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "GaussianDropout",
    "GaussianNoise",
    "AlphaDropout",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "Cropping1D",
    "Cropping2D",
    "Permute",
    "Identity",
    "ActivityRegularization",
)
PREPROCESSING = ("InputLayer", "Rescaling", "Normalization", "Flip")  # models.preprocessing_output's ops
AFFINE = ("Rescaling", "Normalization")
PIXEL_MAX = 255.0  # every model takes pixels 0..255 (DESIGN: raw pixels in): the normalisation's ranges are known
BINARY = ("Add", "Subtract", "Multiply")  # TFLite ADD / SUB / MUL take a fused ReLU
# outputs whose INT8 grid the converter fixes (LOGISTIC, SOFTMAX: 1/256 and -128; TANH: 1/128 and 0); the softmax
# one matters for top-1: two classes within 1/256 tie in the INT8 model, and its first wins (measured: 1.7 % of
# MobileNetV2's photos10 images), so the QAT model rounds the probabilities too
FIXED_RANGES = {"sigmoid": LOGISTIC_RANGE, "softmax": LOGISTIC_RANGE, "tanh": (-1.0, 127.0 / 128.0)}
FUSED = ("relu", "relu6")
SWISH = ("silu", "swish")


@dataclass
class Placement:
    """What the rewrite did: the record a report and the placement test read."""

    folded: list[tuple[str, str]] = field(default_factory=list)  # (convolution, BatchNormalization) pairs
    weights: list[str] = field(default_factory=list)  # layers whose weights are fake-quantized
    quantizers: list[str] = field(default_factory=list)  # ActivationQuantizer layer names, in graph order
    fused: list[str] = field(default_factory=list)  # outputs left unrounded: fused into the next op
    passthrough: list[str] = field(default_factory=list)  # outputs on their input's grid, or fixed by the converter

    def to_dict(self) -> dict[str, Any]:
        return {
            "folded_batchnorms": [list(pair) for pair in self.folded],
            "fake_quantized_weights": len(self.weights),
            "activation_quantizers": len(self.quantizers),
            "fused_outputs": len(self.fused),
            "unquantized_outputs": len(self.passthrough),
        }


def activation_of(layer) -> str:
    """The activation a layer applies, by name: ``relu6`` for ReLU(max_value=6), "" for none / linear."""
    kind = type(layer).__name__
    if kind == "ReLU":
        config = layer.get_config()
        plain = not config.get("negative_slope") and not config.get("threshold")
        return {None: "relu", 6.0: "relu6"}.get(config.get("max_value"), "other") if plain else "other"
    if kind == "Softmax":
        return "softmax"
    config = layer.get_config() if kind in ("Activation", *WEIGHTED) else {}
    name = config.get("activation", "linear")
    name = name if isinstance(name, str) else getattr(name, "__name__", str(name))
    return "" if name == "linear" else name


class _Rewriter:
    """One pass of ``clone_model``: the plan made from the original graph, carried out call by call."""

    def __init__(self, model, *, per_channel: bool, symmetric: bool, decay: float) -> None:
        self.per_channel, self.symmetric, self.decay = per_channel, symmetric, decay
        self.placement = Placement()
        self.folds: dict[str, Any] = {}  # convolution name → its BatchNormalization layer
        self.folded_into: dict[str, str] = {}  # BatchNormalization name → its convolution
        self.fuse_next: set[str] = set()  # ops whose output is fused into their single consumer
        self.preprocessing: set[str] = set()
        self.normalised_range = (0.0, PIXEL_MAX)  # the input's range, carried through the normalisation ops
        self.originals: dict[int, Any] = {}  # id(clone) → the layer it was cloned from
        self._plan(model)

    # -- the plan, from the original graph ---------------------------------------------------

    def _plan(self, model) -> None:
        nodes = graph_nodes(model, not_a_graph=ModelError(f"{model.name}: QAT needs a functional or Sequential model"))
        consumers: dict[int, list[Any]] = {}
        calls: dict[str, int] = {}
        for node in nodes:
            calls[node.operation.name] = calls.get(node.operation.name, 0) + 1
            for tensor in node.arguments.keras_tensors:
                consumers.setdefault(id(tensor), []).append(node)
            if is_nested_model(node.operation):
                raise ModelError(
                    f"{node.operation.name}: a nested model inside {model.name}; QAT rewrites a flat graph "
                    "(build the model on a keras.Input, as edgecls' registry does)"
                )
        outputs = {id(tensor) for tensor in functional_graph(model).outputs}
        for node in nodes:  # the leading normalisation ops: rounded as MUL then ADD (see the module's doc)
            if type(node.operation).__name__ not in PREPROCESSING:
                break
            self.preprocessing.add(node.operation.name)
            user = self._single_user(node, consumers, outputs)
            scale_only = type(node.operation).__name__ == "Rescaling" and not np.any(affine_of(node.operation)[1])
            if scale_only and user is not None and type(user.operation).__name__ in WEIGHTED:
                self.fuse_next.add(node.operation.name)  # the converter folds the MUL into the convolution
        for node in nodes:
            operation, kind = node.operation, type(node.operation).__name__
            if kind in WEIGHTED and calls[operation.name] > 1:
                raise ModelError(f"{operation.name}: a {kind} called {calls[operation.name]} times; QAT needs one call")
            user = self._single_user(node, consumers, outputs)
            if user is None:
                continue
            folds = type(user.operation).__name__ == "BatchNormalization" and not activation_of(operation)
            if kind in WEIGHTED and folds:
                self.folds[operation.name] = user.operation
                self.folded_into[user.operation.name] = operation.name
            elif self._fuses(node, user):
                self.fuse_next.add(operation.name)
        for node in nodes:  # conv → BN → consumer: whether the folded op's output fuses is decided at the BN
            user = self._single_user(node, consumers, outputs) if node.operation.name in self.folded_into else None
            if user is not None and self._fuses(node, user, folded=True):
                self.fuse_next.add(node.operation.name)

    @staticmethod
    def _single_user(node, consumers: dict[int, list[Any]], outputs: set[int]):
        """The one node reading ``node``'s output, or None (several, none, or it is a model output)."""
        if len(node.outputs) != 1 or id(node.outputs[0]) in outputs:
            return None
        users = consumers.get(id(node.outputs[0]), [])
        return users[0] if len(users) == 1 else None

    def _fuses(self, producer, consumer, *, folded: bool = False) -> bool:
        """Whether ``consumer`` runs fused into ``producer``'s op, so ``producer``'s output is never rounded."""
        kind = type(producer.operation).__name__
        weighted = folded or (kind in WEIGHTED and not activation_of(producer.operation))
        takes_activation = weighted or kind in BINARY  # conv/FC/ADD/SUB/MUL carry a fused activation in TFLite
        if type(consumer.operation).__name__ in ("ReLU", "Activation") and activation_of(consumer.operation) in FUSED:
            return takes_activation
        return weighted and self._constant_add(consumer)  # conv + constant: folded into the bias

    @staticmethod
    def _constant_add(node) -> bool:
        """A ``keras.ops`` Add/Subtract with one tensor argument (``x + 3.0``)."""
        return (
            is_ops_class(type(node.operation))
            and type(node.operation).__name__ in ("Add", "Subtract")
            and len(node.arguments.keras_tensors) == 1
        )

    # -- carrying it out ----------------------------------------------------------------------

    def clone(self, operation):
        """Layers with trainable weights are cloned (QAT trains its own copy); the others and ops are reused."""
        kind = type(operation).__name__
        if kind in WEIGHTED or operation.name in self.folded_into or not getattr(operation, "trainable_weights", None):
            return operation  # replaced by a QuantConv, or nothing QAT could train (Normalization's statistics)
        clone = operation.__class__.from_config(operation.get_config())
        self.originals[id(clone)] = operation
        return clone

    def call(self, operation, *args, **kwargs):
        name, kind = operation.name, type(operation).__name__
        if kind in WEIGHTED:
            quant = QuantConv.from_layers(operation, self.folds.get(name), per_channel=self.per_channel)
            self.placement.weights.append(name)
            if name in self.folds:
                self.placement.folded.append((name, self.folds[name].name))
            outputs = quant(args[0])
            activation = activation_of(operation)
            if activation:
                return self._activation(name, activation, outputs, pre_quantized=False)
            return outputs if name in self.folds else self._after(name, outputs)
        if name in self.folded_into:  # the convolution before it computed the folded op; the tensor is its output
            return self._after(name, args[0], source=self.folded_into[name])
        if kind == "BatchNormalization":
            kwargs["training"] = False  # frozen statistics, as in every folded one
        outputs = operation(*args, **kwargs)
        original = self.originals.get(id(operation))
        if original is not None:
            operation.set_weights(original.get_weights())
        if kind in AFFINE and name in self.preprocessing and name not in self.fuse_next:
            return self._affine(operation, args[0])
        if name in self.preprocessing or kind in PASSTHROUGH:
            self.placement.passthrough.append(name)
            return outputs
        activation = activation_of(operation) if kind in ("Activation", "Softmax", "ReLU") else ""
        if activation in FIXED_RANGES or activation in SWISH:
            return self._activation(name, activation, args[0], pre_quantized=True, computed=outputs)
        return self._after(name, outputs)

    def _affine(self, operation, inputs):
        """A Rescaling / Normalization as the converter runs it: two ops, each output its own INT8 tensor.

        Rescaling is MUL then ADD, Normalization SUB then MUL; each becomes two
        ``Rescaling`` layers (``<name>_scale``, ``<name>_offset``) with a
        quantizer each, and the converter takes both ranges. Left whole, it
        calibrates the first op's output itself (measured: [-1, 2] for
        MobileNet's x/127.5 - 1, a step of 3/255 where the pixels have 2/255).
        The ranges are fixed: the pixels' 0..255 carried through the map.
        """
        import keras

        scale, offset = affine_of(operation)
        steps = [("scale", scale, np.zeros(1)), ("offset", np.ones(1), offset)]
        if isinstance(operation, keras.layers.Normalization):  # (x - mean) / std: the shift first
            steps = [("offset", np.ones(1), offset / scale), ("scale", scale, np.zeros(1))]
        outputs = inputs
        for suffix, factor, shift in steps:
            if suffix == "offset" and not np.any(shift):
                continue
            # The MUL's / ADD's constant operand is an INT8 tensor too: per-channel constants (ImageNet's mean and
            # 1/std) land off their values by up to half a step (measured: 1/std 4.444 stored as 4.43), enough to
            # move 8 % of EfficientNet-B0's normalised pixels one level. A scalar sits on its own grid's end: exact.
            factor, shift = (
                (constant_on_grid(factor), shift) if suffix == "scale" else (factor, constant_on_grid(shift))
            )
            low, high = self.normalised_range
            ends = np.concatenate([low * factor + shift, high * factor + shift])
            self.normalised_range = (float(ends.min()), float(ends.max()))
            layer = keras.layers.Rescaling(_scalar(factor), offset=_scalar(shift), name=f"{operation.name}_{suffix}")
            # Pixels are integers: x/127.5 - 1 lies exactly half-way between two levels of [-1, 1] (zero point
            # 127.5), where the fake-quant op rounds up and TFLite's ADD away from zero: half the pixels would differ
            # by one level. A quarter level more below the range moves every value off the ties.
            low, high = self.normalised_range
            fixed = (low - (high - low) / 255.0 / 4.0, high)
            outputs = self._after(layer.name, layer(outputs), fixed=fixed)
        return outputs

    def _after(self, name: str, outputs, *, fixed=None, point: str = "output", source: str | None = None):
        """``outputs`` with a quantizer after it, unless the next op fuses it.

        ``point`` says which tensor of layer ``name`` it is: its ``output``, the
        ``sigmoid`` inside a swish, or the ``linear`` output of a convolution
        before its own activation. ``source``: the QAT model's layer that computes
        the tensor (a folded BatchNormalization's convolution), default ``name``.
        """
        if name in self.fuse_next and point == "output" and fixed is None:
            self.placement.fused.append(name)
            return outputs
        suffix = "quant" if point == "output" else f"{point}_quant"
        quantizer = ActivationQuantizer(
            decay=self.decay,
            symmetric=self.symmetric,
            fixed=fixed,
            source=source or name,
            point=point,
            name=f"{name}_{suffix}",
        )
        self.placement.quantizers.append(quantizer.name)
        return quantizer(outputs)

    def _activation(self, name: str, activation: str, inputs, *, pre_quantized: bool, computed=None):
        """An activation as the converter emits it: fused (ReLU), a fixed grid (sigmoid), LOGISTIC + MUL (swish)."""
        import keras

        if activation in FUSED:
            return self._after(name, keras.activations.get(activation)(inputs))
        if not pre_quantized:  # a conv's own non-fusable activation: its linear output is a tensor of its own
            inputs = self._after(name, inputs, point="linear")
        if activation in FIXED_RANGES:
            values = computed if computed is not None else keras.activations.get(activation)(inputs)
            return self._after(name, values, fixed=FIXED_RANGES[activation])
        if activation in SWISH:
            gate = self._after(name, keras.ops.sigmoid(inputs), fixed=LOGISTIC_RANGE, point="sigmoid")
            return self._after(name, inputs * gate)
        return self._after(name, keras.activations.get(activation)(inputs))


def link_input_scales(model) -> None:
    """Give each ``QuantConv`` of ``model`` its input's INT8 step (the converter's bias grid needs it): the
    quantizer its input is on, found in the graph; none when the input is on no single grid."""
    for node in graph_nodes(model, not_a_graph=ModelError(f"{model.name}: a QAT model is a functional model")):
        if isinstance(node.operation, QuantConv):
            source = input_quantizer(node.arguments.keras_tensors[0])
            node.operation.input_scale = source.scale if source is not None else None


def load_qat_model(path):
    """A QAT model saved with ``model.save``, as it was: its layers from the file, its bias grids relinked."""
    import keras

    model = keras.models.load_model(path, compile=False)
    link_input_scales(model)
    return model


def input_quantizer(tensor):
    """The ``ActivationQuantizer`` whose grid ``tensor`` is on: itself, or through ops that keep their input's
    grid (padding, reshape, max pooling); None when the tensor is not on one INT8 grid (a fused output)."""
    while True:
        made = producer(tensor)
        if made is None:
            return None
        operation, inputs = made
        if isinstance(operation, ActivationQuantizer):
            return operation
        if type(operation).__name__ not in PASSTHROUGH or len(inputs) != 1:
            return None
        tensor = inputs[0]


def constant_on_grid(values: np.ndarray) -> np.ndarray:
    """A constant operand as the converter stores it: one INT8 tensor, asymmetric, its range [min, max] widened to
    hold 0 (``fake_quant.quant_params``), each value rounded to that grid."""
    values = np.asarray(values, dtype=np.float64)
    scale, zero_point = quant_params(float(values.min()), float(values.max()))
    levels = np.clip(np.round(values / scale) + zero_point, -128, 127)
    return (levels - zero_point) * scale


def _scalar(values: np.ndarray):
    return float(values.reshape(-1)[0]) if values.size == 1 else values.reshape(-1).tolist()


def affine_of(layer) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per channel (or scalar) of a Rescaling or a Normalization: output = input × scale + offset."""
    import keras

    if isinstance(layer, keras.layers.Normalization):
        if layer.invert:
            raise ModelError(f"{layer.name}: an inverted Normalization is not a model input's normalisation")
        mean = np.asarray(layer.mean, dtype=np.float64).reshape(-1)
        std = np.maximum(np.sqrt(np.asarray(layer.variance, dtype=np.float64).reshape(-1)), keras.config.epsilon())
        return 1.0 / std, -mean / std
    config = layer.get_config()
    return np.asarray(config["scale"], dtype=np.float64), np.asarray(config.get("offset", 0.0), dtype=np.float64)


def build_qat_model(model, *, per_channel: bool = True, symmetric: bool = False, decay: float = 0.99):
    """The QAT twin of ``model`` and where its quantizers went (``Placement``).

    Ranges start empty: set them from calibration images (``qat.initialize_ranges``) before training.
    """
    import keras

    rewriter = _Rewriter(model, per_channel=per_channel, symmetric=symmetric, decay=decay)
    graph = functional_graph(model, not_a_graph=ModelError(f"{model.name}: QAT needs a functional model"))
    qat = keras.models.clone_model(graph, clone_function=rewriter.clone, call_function=rewriter.call)
    link_input_scales(qat)
    log.info(
        "QAT model: %d BatchNorm folded, %d weights and %d activations fake-quantized",
        len(rewriter.placement.folded),
        len(rewriter.placement.weights),
        len(rewriter.placement.quantizers),
    )
    return qat, rewriter.placement


def activation_quantizers(model) -> list[ActivationQuantizer]:
    """The model's activation quantizers, in layer order."""
    return [layer for layer in model.layers if isinstance(layer, ActivationQuantizer)]


def deploy_model(qat_model, *, taps: dict[str, Any] | None = None):
    """``qat_model`` without rounding: folded float weights in plain Keras layers (the ONNX export's source).

    ``taps``, when given, receives each activation quantizer's name → the tensor it rounded, in the new model.
    """
    import keras

    def call(operation, *args, **kwargs):
        if isinstance(operation, ActivationQuantizer):
            if taps is not None:
                taps[operation.name] = args[0]
            return args[0]
        if isinstance(operation, QuantConv):
            return operation.deploy_layer()(args[0])
        return operation(*args, **kwargs)

    return keras.models.clone_model(qat_model, clone_function=lambda operation: operation, call_function=call)
