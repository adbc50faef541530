"""Grad-CAM: where a ``.keras`` classifier looks when it makes a decision.

Selvaraju et al., "Grad-CAM", ICCV 2017: the class score's gradient with respect
to the last convolutional feature map, averaged over space, weights that map's
channels; their ReLU'd sum, upsampled to the input, is the heat map. The class
score is the pre-softmax logit (``Dense(name="logits")``), as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecls.base.errors import ConfigError, DataError
from edgecls.base.fileio import write_json
from edgecls.data import write_image
from edgecls.models import LOGITS_LAYER
from edgecls.runtime.preprocess import read_image, to_model_pixels

_SPATIAL_PASS_THROUGH = ("BatchNormalization", "ReLU", "Activation", "LeakyReLU", "PReLU")


@dataclass
class Explanation:
    image: str
    label: str  # the class explained
    score: float  # its softmax probability
    heatmap_png: str


@dataclass
class ExplainResult:
    model: str
    layer: str
    explanations: list[Explanation] = field(default_factory=list)


def find_last_conv_layer(model) -> str:
    """The last convolution's output, followed through BN/activation layers that keep its shape."""
    import keras

    conv_types = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    last = None
    for layer in model.layers:
        if isinstance(layer, conv_types):
            last = layer.name
        elif last is not None and type(layer).__name__ in _SPATIAL_PASS_THROUGH and len(layer.output.shape) == 4:
            last = layer.name
        elif last is not None and len(getattr(layer, "output", np.zeros(0)).shape) != 4:
            break  # reached the head (global pooling and after)
    if last is None:
        raise ConfigError(f"{model.name}: no convolutional layer found for Grad-CAM; pass --layer NAME")
    return last


def grad_cam(model, pixels: np.ndarray, *, layer: str, class_index: int | None = None) -> tuple[np.ndarray, int, float]:
    """Heat map (H, W) in [0, 1] for one HxWxC uint8 image; returns (map, class, probability)."""
    import keras
    import tensorflow as tf

    layer_names = [model_layer.name for model_layer in model.layers]
    logits_layer = model.get_layer(LOGITS_LAYER) if LOGITS_LAYER in layer_names else model.layers[-1]
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, logits_layer.output, model.output])
    batch = tf.convert_to_tensor(pixels[None].astype(np.float32))
    with tf.GradientTape() as tape:
        features, logits, probs = probe(batch, training=False)
        chosen = int(tf.argmax(probs[0])) if class_index is None else class_index
        score = logits[:, chosen]
    gradients = tape.gradient(score, features)[0]
    weights = tf.reduce_mean(gradients, axis=(0, 1))
    cam = tf.nn.relu(tf.reduce_sum(features[0] * weights, axis=-1)).numpy()
    import cv2

    cam = cv2.resize(cam, (pixels.shape[1], pixels.shape[0]), interpolation=cv2.INTER_LINEAR)
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam), chosen, float(probs[0, chosen])


def overlay(image_bgr: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The heat map in the JET colour map blended over the image, at the image's size."""
    import cv2

    heat = cv2.resize(heat, (image_bgr.shape[1], image_bgr.shape[0]))
    colored = cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET)
    base = image_bgr if image_bgr.ndim == 3 else cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(base[:, :, :3], 0.55, colored, 0.45, 0)


def _unique_name(stem: str, taken: set[str]) -> str:
    """``stem.png``, or ``stem_2.png``, ``stem_3.png``… when an earlier image of the same call took it."""
    name, number = f"{stem}.png", 1
    while name in taken:
        number += 1
        name = f"{stem}_{number}.png"
    taken.add(name)
    return name


def explain(
    model_path: str | Path,
    images: list[str | Path],
    *,
    layer: str | None = None,
    class_name: str | None = None,
    out_dir: str | Path | None = None,
    unsafe: bool = False,
) -> ExplainResult:
    """Write a Grad-CAM overlay PNG per image.

    >>> explain("runs/cnn-digits/model.keras", ["three.png"]).explanations[0].label  # doctest: +SKIP
    '3'
    """
    import cv2

    from edgecls.adapters.keras_io import load_keras_model, model_info_from_keras

    model = load_keras_model(model_path, unsafe=unsafe)
    info = model_info_from_keras(model_path, model)
    layer = layer or find_last_conv_layer(model)
    layer_names = [model_layer.name for model_layer in model.layers]
    if layer not in layer_names:
        conv_names = [name for name in layer_names if "conv" in name.lower()]
        raise ConfigError(f"no layer named {layer!r} in {model_path}; convolutional layers: {', '.join(conv_names)}")
    class_index = None
    if class_name is not None:
        if class_name not in info.labels:
            raise ConfigError(f"--class {class_name!r} is not one of the model's labels: {', '.join(info.labels)}")
        class_index = info.labels.index(class_name)
    out = Path(out_dir) if out_dir else Path(model_path).parent / "explain"
    result = ExplainResult(model=str(model_path), layer=layer)
    names: set[str] = set()
    for image_path in images:
        image = read_image(image_path)
        if image is None:
            raise DataError(f"{image_path}: not a decodable image")
        heat, chosen, probability = grad_cam(
            model, to_model_pixels(image, info.input_size, info.channel_order), layer=layer, class_index=class_index
        )
        target = out / _unique_name(f"{Path(image_path).stem}_gradcam", names)  # a/img.jpg and b/img.jpg: two overlays
        write_image(target, overlay(image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), heat))
        result.explanations.append(Explanation(str(image_path), info.labels[chosen], probability, str(target)))
    write_json(out / "explain.json", result)
    return result
