"""The keras.applications backbones: preprocessing that matches their ImageNet weights, weights from
Keras' cache with no network, the BatchNorm rule for training from scratch (issue 15).

Real-photo folders come from ``benchmarks/photoset.py`` (imported from there).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_legacy_h5
from shared_models import registry_model, registry_params

from edgecls.base.errors import ConfigError, ModelError
from edgecls.models import bn_momentum_for, build_model, get_entry, preprocessing_output
from edgecls.models.pretrained import imagenet_file, imagenet_weights_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

# The keras.applications function of each backbone (the stock network the references are built from).
APPLICATIONS = {
    "mobilenetv2": "MobileNetV2",
    "mobilenetv3small": "MobileNetV3Small",
    "mobilenetv3large": "MobileNetV3Large",
    "resnet50": "ResNet50",
    "efficientnetb0": "EfficientNetB0",
    "efficientnetv2b0": "EfficientNetV2B0",
}


def _pixels(size: int = 32, count: int = 2) -> np.ndarray:
    pixels = np.random.default_rng(0).integers(0, 256, (count, size, size, 3)).astype("float32")
    pixels[0, 0, 0] = (0.0, 127.5, 255.0)  # the ends of the range and the middle
    return pixels


def _reference(name: str, pixels: np.ndarray) -> np.ndarray:
    """What ``name``'s ImageNet weights expect from these pixels, by Keras' own code."""
    import keras
    from keras.applications import imagenet_utils

    entry = get_entry(name)
    if entry.keras_module is None:
        return pixels / 255.0  # our own cnn
    module = getattr(keras.applications, entry.keras_module)
    out = np.asarray(module.preprocess_input(pixels.copy()))
    if not np.array_equal(out, pixels):
        return out  # MobileNetV2 (tf), ResNet50 (caffe: BGR, mean subtracted)
    # preprocess_input is a pass-through: the network normalises inside itself.
    if name == "efficientnetb0":
        # Keras' ImageNet stem: Rescaling(1/255), Normalization with the file's mean and variance (the
        # standard deviations, tensorflow#49930), Rescaling(1/sqrt(std)): (x/255 - mean)/std, torch mode.
        return np.asarray(imagenet_utils.preprocess_input(pixels.copy(), mode="torch"))
    stock = getattr(keras.applications, APPLICATIONS[name])(
        weights=None, include_top=False, input_shape=pixels.shape[1:]
    )
    return np.asarray(keras.Model(stock.inputs, preprocessing_output(stock))(pixels))


@pytest.mark.parametrize("name", registry_params())
def test_preprocessing_matches_the_imagenet_weights(name):
    import keras

    model = registry_model(name)  # at its smallest input (shared with tests/test_models.py)
    size = get_entry(name).min_image_size
    pixels = _pixels(size)
    ours = np.asarray(keras.Model(model.inputs, preprocessing_output(model))(pixels))
    reference = _reference(name, pixels)
    assert ours.shape == reference.shape
    assert np.max(np.abs(ours - reference)) <= 1e-5


def test_resnet50_flips_to_bgr_and_subtracts_the_caffe_mean():
    import keras

    model = registry_model("resnet50")  # 32x32 (shared)
    pixels = np.zeros((1, 32, 32, 3), "float32")
    pixels[..., 0] = 255.0  # pure red
    out = np.asarray(keras.Model(model.inputs, preprocessing_output(model))(pixels))[0, 0, 0]
    np.testing.assert_allclose(out, [-103.939, -116.779, 255.0 - 123.68], atol=1e-4)  # red is the last (BGR) channel


def test_bn_momentum_rule():
    assert bn_momentum_for(10) == 0.9
    assert bn_momentum_for(200) == pytest.approx(0.95)
    assert bn_momentum_for(10**6) == 0.99
    with pytest.raises(ConfigError):
        bn_momentum_for(0)


def test_bn_momentum_applies_to_every_batchnorm_of_a_base_from_scratch():
    import keras

    model = build_model("mobilenetv3small", num_classes=3, image_size=(32, 32), channels=3, bn_momentum=0.93)
    momenta = {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.93}
    default = build_model("mobilenetv3small", num_classes=3, image_size=(32, 32), channels=3)
    assert {layer.momentum for layer in default.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.999}


def test_imagenet_availability_follows_keras():
    assert imagenet_weights_available("mobilenetv2", alpha=0.35, image_size=(64, 64))
    assert imagenet_file("mobilenetv2", alpha=0.35, image_size=(64, 64)).file_name.endswith("_0.35_224_no_top.h5")
    assert imagenet_file("mobilenetv2", alpha=1.0, image_size=(96, 96)).file_name.endswith("_1.0_96_no_top.h5")
    assert not imagenet_weights_available("mobilenetv3small", alpha=0.35)
    assert imagenet_weights_available("mobilenetv3large", alpha=0.75)
    assert not imagenet_weights_available("cnn")
    for name in ("resnet50", "efficientnetb0", "efficientnetv2b0"):
        entry = imagenet_file(name)
        assert entry.file_hash and entry.origin.endswith(entry.file_name)


@pytest.mark.parametrize(
    "name,alpha",
    [
        ("mobilenetv2", 0.35),
        # each 4-8 s (a stock network at 96 px written as HDF5, then loaded): make test, not the fast lane
        pytest.param("mobilenetv3small", 1.0, marks=pytest.mark.slow),
        pytest.param("efficientnetb0", 1.0, marks=pytest.mark.slow),
    ],
)
def test_imagenet_weights_come_from_the_keras_cache(name, alpha, tmp_path, monkeypatch, no_network):
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    keras.utils.set_random_seed(123)
    kwargs = {"alpha": alpha} if name.startswith("mobilenet") else {}
    stock = getattr(keras.applications, APPLICATIONS[name])(
        weights=None, include_top=False, input_shape=(96, 96, 3), **kwargs
    )
    cached = tmp_path / "keras-home" / "models" / imagenet_file(name, alpha=alpha, image_size=(96, 96)).file_name
    write_legacy_h5(stock, cached)

    keras.utils.set_random_seed(7)  # a different random start than the file's
    options = {"alpha": alpha} if name.startswith("mobilenet") else {}
    model = build_model(
        name, num_classes=4, image_size=(96, 96), channels=3, weights="imagenet", bn_momentum=0.9, **options
    )
    expected = [layer for layer in stock.layers if layer.weights]
    loaded = [layer for layer in model.layers if layer.weights][: len(expected)]
    assert [type(layer) for layer in loaded] == [type(layer) for layer in expected]
    compared = 0
    for ours, theirs in zip(loaded, expected):
        if isinstance(
            ours, keras.layers.Normalization
        ):  # EfficientNet's stem: torch mode, see models._set_torch_normalization
            np.testing.assert_allclose(ours.get_weights()[0], [0.485, 0.456, 0.406], rtol=1e-6)
            continue
        for a, b in zip(ours.get_weights(), theirs.get_weights()):
            np.testing.assert_array_equal(a, b)
            compared += 1
    assert compared > 50
    # pretrained: Keras' own BatchNorm momentum stays (the rule is for a base from scratch)
    assert 0.9 not in {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert no_network == []


def test_imagenet_weights_with_an_empty_cache_offline_is_one_line(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(socket.gaierror("test: offline")))
    with pytest.raises(ModelError) as caught:
        build_model("mobilenetv2", num_classes=4, image_size=(96, 96), channels=3, alpha=0.35, weights="imagenet")
    message = str(caught.value)
    assert "\n" not in message
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in message
    assert str(tmp_path / "empty" / "models") in message
    assert "--weights none" in message


@pytest.mark.slow  # three MobileNetV3-Small built and one saved and loaded: 10 s
def test_start_from_an_earlier_keras_model(tmp_path):
    import keras

    first = build_model("mobilenetv3small", num_classes=3, image_size=(32, 32), channels=3, alpha=0.75)
    path = tmp_path / "earlier.keras"
    first.save(path)
    same = build_model("mobilenetv3small", num_classes=3, image_size=(32, 32), channels=3, alpha=0.75, weights=path)
    for a, b in zip(first.get_weights(), same.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = build_model("mobilenetv3small", num_classes=5, image_size=(32, 32), channels=3, alpha=0.75, weights=path)
    np.testing.assert_array_equal(other.get_layer("conv").get_weights()[0], first.get_layer("conv").get_weights()[0])
    assert other.get_layer("logits").get_weights()[0].shape == (first.get_layer("logits").get_weights()[0].shape[0], 5)
    with pytest.raises(ModelError, match="same --model and --alpha"):
        build_model("mobilenetv3small", num_classes=3, image_size=(32, 32), channels=3, alpha=1.0, weights=path)
    del keras


@pytest.mark.slow
def test_a_backbone_from_scratch_learns_real_photos(tmp_path):
    """mobilenetv3small, 10 epochs (130 steps) on textures cut from shipped photos: well above chance (25 %).

    (With 48 steps it still sat at chance even at momentum 0.9: the statistics need the weights to settle too.)
    """
    from photoset import TEXTURES4, make_photoset

    from edgecls.data import load_dataset
    from edgecls.train import FitOptions, fit

    root = make_photoset(tmp_path / "textures", TEXTURES4, train_per_class=100, val_per_class=30, patch_size=64, seed=1)
    dataset = load_dataset(str(root), image_size=(64, 64), channel_order="RGB")
    epochs, batch_size = 10, 32
    steps = int(np.ceil(len(dataset.train) / batch_size)) * epochs
    model = build_model(
        "mobilenetv3small", num_classes=4, image_size=(64, 64), channels=3, bn_momentum=bn_momentum_for(steps)
    )
    history = fit(model, dataset, FitOptions(epochs=epochs, batch_size=batch_size, seed=0))
    assert max(history["val_accuracy"]) >= 0.5, history
