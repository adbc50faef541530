"""Precise BatchNorm statistics (edgecls.train.precise_bn) and early stopping that waits for a run to start
(edgecls.train.stopping), issue 26: the numbers they compute, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest

from edgecls.data import ImageSet
from edgecls.train.precise_bn import BatchNormEstimator, batchnorm_layers, precise_bn_for, sample_images
from edgecls.train.stopping import early_stopping


def _tiny_model(dropout: float = 0.0):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.999, name="bn1")(x)
    x = keras.layers.ReLU()(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="drop")(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(momentum=0.999, name="bn2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def _pixels(count: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (count, 8, 8, 3)).astype(np.uint8)


def test_the_first_layer_gets_the_population_statistics_of_its_input_pooled_over_uneven_batches():
    import keras

    model = _tiny_model()
    pixels = _pixels(10)
    assert BatchNormEstimator(model, pixels, batch_size=4).update() == 2  # batches of 4, 4 and 2
    conv = np.asarray(keras.Model(model.inputs[0], model.get_layer("conv1").output)(pixels.astype("float32")))
    bn1 = model.get_layer("bn1")
    np.testing.assert_allclose(bn1.moving_mean.numpy(), conv.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), conv.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-3)


def test_deeper_layers_see_their_input_as_training_computes_it_and_dropout_is_off():
    import keras

    model = _tiny_model(dropout=0.5)
    pixels = _pixels(6)
    BatchNormEstimator(model, pixels, batch_size=6).update()  # one batch: exactly that batch's moments
    assert model.get_layer("drop").rate == 0.5  # restored
    # what bn2 sees: bn1 normalising with the batch's own statistics (as in training), no dropout
    conv1 = keras.Model(model.inputs[0], model.get_layer("conv1").output)(pixels.astype("float32"))
    bn1 = model.get_layer("bn1")
    mean, variance = np.mean(conv1, axis=(0, 1, 2)), np.var(conv1, axis=(0, 1, 2))
    normed = (conv1 - mean) / np.sqrt(variance + bn1.epsilon) * bn1.gamma.numpy() + bn1.beta.numpy()
    conv2 = np.asarray(model.get_layer("conv2")(np.maximum(normed, 0.0)))
    bn2 = model.get_layer("bn2")
    np.testing.assert_allclose(bn2.moving_mean.numpy(), conv2.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn2.moving_variance.numpy(), conv2.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-3)


def test_frozen_batchnorm_keeps_its_statistics():
    model = _tiny_model()
    model.get_layer("bn1").trainable = False
    before = model.get_layer("bn1").moving_variance.numpy().copy()
    assert [layer.name for layer in batchnorm_layers(model)] == ["bn2"]
    assert BatchNormEstimator(model, _pixels(4), batch_size=4).update() == 1
    np.testing.assert_array_equal(model.get_layer("bn1").moving_variance.numpy(), before)


def test_the_sample_is_fixed_by_the_seed_and_never_larger_than_the_set():
    images = ImageSet(_pixels(20), np.arange(20) % 2, [f"x{i}" for i in range(20)])
    first, again = sample_images(images, 8, seed=3), sample_images(images, 8, seed=3)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (8, 8, 8, 3) and first.dtype == np.uint8
    assert len(sample_images(images, 100, seed=3)) == 20
    assert precise_bn_for(None, keras_base_from_scratch=True) > 0
    assert (
        precise_bn_for(None, keras_base_from_scratch=False) == 0
        and precise_bn_for(64, keras_base_from_scratch=False) == 64
    )


class _Model:
    stop_training = False


def _run(stopper, epochs: list[tuple[float, float]]) -> int:
    """Feed (val accuracy, train accuracy) per epoch; returns how many epochs ran."""
    stopper.set_model(_Model())
    stopper.on_train_begin()
    for epoch, (val, train) in enumerate(epochs):
        stopper.on_epoch_end(epoch, {"val_accuracy": val, "accuracy": train})
        if stopper.model.stop_training:
            return epoch + 1
    return len(epochs)


def test_early_stopping_holds_its_count_while_validation_is_at_chance_and_training_rises(caplog):
    stopper = early_stopping(patience=2, threshold=0.3)
    rising = [(0.25, 0.4), (0.25, 0.6), (0.25, 0.8), (0.25, 0.9)]
    with caplog.at_level("INFO", logger="edgecls.train.stopping"):
        assert _run(stopper, rising + [(0.6, 0.95), (0.55, 0.96), (0.58, 0.97), (0.7, 0.97)]) == 7
    assert stopper.held == [1, 2, 3, 4]
    assert "early stopping does not count this epoch" in caplog.text
    # training accuracy flat at chance: the epochs count, and the run stops
    assert _run(early_stopping(patience=2, threshold=0.3), [(0.25, 0.9), (0.25, 0.8), (0.25, 0.85), (0.25, 0.9)]) == 4


@pytest.mark.parametrize("history", [[(0.6, 0.5), (0.25, 0.7), (0.25, 0.8), (0.25, 0.9)]])
def test_early_stopping_counts_once_validation_has_left_chance(history):
    assert _run(early_stopping(patience=2, threshold=0.3), history) == 3


@pytest.mark.parametrize("cache", ["disk", "none"])
def test_a_streamed_training_set_gives_the_sample_held_in_memory(tmp_path, shapes_folder, cache):
    from edgecls.data import load_dataset

    memory = load_dataset(str(shapes_folder), image_size=(16, 16), cache="memory")
    streamed = load_dataset(str(shapes_folder), image_size=(16, 16), cache=cache, cache_dir=tmp_path / "cache")
    assert streamed.train.streamed and not memory.train.streamed
    np.testing.assert_array_equal(sample_images(streamed.train, 10, seed=4), sample_images(memory.train, 10, seed=4))


@pytest.mark.slow
def test_the_kept_model_carries_statistics_true_to_its_weights_from_the_disk_cache(tmp_path, shapes_folder):
    """Streamed from the disk cache: the saved model's moving statistics are the ones its own weights give on
    the training sample, not moving averages of earlier weights."""
    import json

    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.data import load_dataset
    from edgecls.train import TrainConfig, train

    options = dict(data=str(shapes_folder), model="cnn", img_size=16, epochs=3, batch_size=4, augment="none")
    result = train(TrainConfig(**options, precise_bn=24, cache="disk", out=str(tmp_path / "run")))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["precise_bn"] == 24 and config["cache"] == "disk"
    model = load_keras_model(result.model_path)
    dataset = load_dataset(str(shapes_folder), image_size=(16, 16))
    sample = sample_images(dataset.train, 24, seed=0)
    layers = batchnorm_layers(model)
    saved = [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()) for layer in layers]
    estimated = BatchNormEstimator(model, sample, batch_size=4).statistics()
    assert len(layers) == 3
    for (mean, variance), (true_mean, true_variance) in zip(saved, estimated):
        np.testing.assert_allclose(mean, true_mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(variance, true_variance, rtol=1e-4, atol=1e-5)
