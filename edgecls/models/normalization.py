"""Pixels 0..255 in, what a network's ImageNet weights expect out: the normalisation inside every model."""

from __future__ import annotations

from edgecls.base.errors import ModelError

# What each model's first layers compute from pixels 0..255 (the modes of
# keras.applications.imagenet_utils.preprocess_input), i.e. what its ImageNet
# weights were trained with: "tf" [-1, 1]; "caffe" RGB→BGR, minus the ImageNet
# mean in BGR order; "torch" /255, minus the mean, over the standard deviation
# (per RGB channel); "unit" /255 (edgecls' own cnn, no ImageNet weights).
PREPROCESSING = ("unit", "tf", "caffe", "torch")
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)  # torch mode, fractions of 255
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # caffe mode, pixels
NORMALIZE_LAYER = "normalize"


def normalize(inputs, preprocessing: str):
    """The layers that turn pixels 0..255 into what ``preprocessing`` expects (see ``PREPROCESSING``).

    Each mode is one ``Rescaling`` (MUL/ADD in TFLite and ONNX); "caffe" puts
    ``keras.ops.flip`` on the channel axis in front (REVERSE_V2 in TFLite, a
    plain op the INT8 converter keeps integer; the pruner leaves it alone, as it
    does everything on the fixed input channels).
    """
    import keras

    if preprocessing == "unit":
        return keras.layers.Rescaling(1.0 / 255.0, name=NORMALIZE_LAYER)(inputs)
    if preprocessing == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=NORMALIZE_LAYER)(inputs)
    if preprocessing == "caffe":
        bgr = keras.ops.flip(inputs, axis=-1)
        return keras.layers.Rescaling(1.0, offset=[-m for m in CAFFE_MEAN_BGR], name=NORMALIZE_LAYER)(bgr)
    if preprocessing == "torch":
        scale = [1.0 / (255.0 * s) for s in IMAGENET_STD_RGB]
        offset = [-m / s for m, s in zip(IMAGENET_MEAN_RGB, IMAGENET_STD_RGB)]
        return keras.layers.Rescaling(scale, offset=offset, name=NORMALIZE_LAYER)(inputs)
    raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")


_PREPROCESSING_OPS = ("InputLayer", "Rescaling", "Normalization", "Flip")


def preprocessing_output(model):
    """The tensor after the model's leading normalisation ops (Rescaling, Normalization, channel flip).

    ``keras.Model(model.inputs, preprocessing_output(model))`` is the
    normalisation sub-graph: pixels 0..255 in, what the first convolution sees out.
    """
    tensor = None
    for operation in model.operations:
        if type(operation).__name__ not in _PREPROCESSING_OPS:
            break
        tensor = operation.output
    if tensor is None:
        raise ModelError(f"{model.name}: no input layer found")
    return tensor


def set_torch_normalization(model) -> None:
    """EfficientNet (v1) always builds its own Rescaling(1/255) → Normalization stem; make it torch mode.

    Built with ``weights=None`` the Normalization is unadapted (mean 0,
    variance 1: pixels / 255). Keras' ImageNet path loads the layer's mean and
    variance from the weights file (variance there holds the standard
    deviations, tensorflow#49930) and appends Rescaling(1 / sqrt(std)):
    together (x/255 - mean) / std, which is what the weights were trained
    with. Here the Normalization computes that directly, for every source of
    weights, so the model does not change with where its weights came from.
    """
    import keras
    import numpy as np

    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            mean, variance, count = layer.get_weights()
            layer.set_weights(
                [
                    np.reshape(IMAGENET_MEAN_RGB, mean.shape).astype(mean.dtype),
                    np.reshape(np.square(IMAGENET_STD_RGB), variance.shape).astype(variance.dtype),
                    count,
                ]
            )
            layer.finalize_state()  # call() reads constants made from the weights here, not the weights
            return
    raise ModelError(f"{model.name}: no Normalization layer in the EfficientNet stem")
