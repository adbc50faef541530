"""Hardening and the deployment loop in training: --augment robust, --adversarial EPS, --init-from + --replay."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecls.base.errors import ConfigError, DataError
from edgecls.data import ImageSet, parse_augment
from edgecls.train.retrain import remap_labels, replay_count, sample_replay


def _images(n: int = 24, size: int = 16, channels: int = 3, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(40, 216, (n, size, size, channels), dtype=np.uint8)
    return ImageSet(pixels, np.arange(n, dtype=np.int64) % 3, [f"x#{i}" for i in range(n)])


def test_parse_augment_accepts_robust_alone_and_with_others():
    assert parse_augment("robust", "folder") == ("robust",)
    assert parse_augment("flip,robust", "folder") == ("flip", "robust")
    assert parse_augment("robust,randaugment", "folder") == ("robust", "randaugment")
    with pytest.raises(DataError, match="robust, randaugment, auto or none"):
        parse_augment("robustish", "folder")


@pytest.mark.slow
@pytest.mark.parametrize(
    "channels, augment",
    [(3, ("robust",)), (1, ("robust",)), (3, ("randaugment",)), (3, ("robust", "randaugment"))],
)
def test_robust_augmentation_is_deterministic_per_seed_and_changes_pixels(channels, augment):
    from edgecls.data import to_tf_dataset

    images = _images(channels=channels)

    def batches(seed: int) -> list[np.ndarray]:
        data = to_tf_dataset(images, batch_size=8, training=True, seed=seed, augment=augment)
        return [x.numpy() for x, _ in data]

    first, again, other = batches(0), batches(0), batches(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    plain = [x.numpy() for x, _ in to_tf_dataset(images, batch_size=8, training=True, seed=0)]
    changed = np.mean([np.mean(np.abs(a - b) > 1) for a, b in zip(first, plain)])
    assert changed > 0.2  # many pixels move: the corrupted images (or RandAugment's) change nearly all of theirs
    stacked = np.concatenate(first)
    assert stacked.shape == (24, 16, 16, channels) and stacked.min() >= 0 and stacked.max() <= 255


@pytest.mark.slow
def test_adversarial_trainer_makes_fgsm_examples_within_epsilon_and_trains():
    import keras
    import tensorflow as tf

    from edgecls.models import build_model
    from edgecls.train.adversarial import AdversarialTrainer

    keras.utils.set_random_seed(0)
    model = build_model("cnn", num_classes=3, image_size=(16, 16), channels=3)
    trainer = AdversarialTrainer(model, epsilon=6.5)
    trainer.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    images = _images()
    clean = tf.constant(images.images, tf.float32)
    adversarial = trainer.adversarial_batch(clean, tf.constant(images.labels)).numpy()
    moved = np.abs(adversarial - images.images.astype(np.float32))
    assert moved.max() <= 6.0  # floor(epsilon): whole pixel levels
    assert np.mean(moved == 6.0) > 0.5  # FGSM moves (almost) every pixel by the whole step
    assert np.array_equal(adversarial, np.round(adversarial))
    before = [w.copy() for w in model.get_weights()]
    logs = trainer.train_on_batch(images.images.astype(np.float32), images.labels, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))  # the wrapped model trained


def test_adversarial_epsilon_is_checked():
    from edgecls.train import TrainConfig

    with pytest.raises(ConfigError, match="--adversarial"):
        TrainConfig(adversarial=0.5)
    with pytest.raises(ConfigError, match="--replay-fraction"):
        TrainConfig(replay_fraction=1.0)


def test_replay_count_and_stratified_sample():
    assert replay_count(100, 1000, 0.5) == 100
    assert replay_count(100, 1000, 0.75) == 300
    assert replay_count(100, 50, 0.5) == 50  # at most the whole old training split
    assert replay_count(100, 1000, 0.0) == 0
    old = _images(n=300)
    sample = sample_replay(old, 90, seed=3)
    assert len(sample) == 90
    assert np.bincount(sample.labels).tolist() == [30, 30, 30]
    assert len(set(sample.sources)) == 90
    assert sample_replay(old, 90, seed=3).sources == sample.sources  # deterministic by seed


def test_new_labels_must_be_the_models_or_a_subset():
    new = _images(n=6)
    remapped = remap_labels(new, ("b", "c", "a"), ("a", "b", "c", "d"), "new/")
    assert remapped.labels.tolist() == [1, 2, 0, 1, 2, 0]
    with pytest.raises(ConfigError) as caught:
        remap_labels(new, ("a", "zebra"), ("a", "b"), "new/")
    assert "zebra" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_init_from_with_replay_trains_on_the_mix_and_reports_both_splits(tmp_path, digits_run):
    """The deployed model is the session's digits cnn (any trained digits model is: what is checked is the mix)."""
    from edgecls.data import load_dataset, write_class_folders
    from edgecls.train import TrainConfig, train

    base = digits_run.train_result
    digits = load_dataset("digits", image_size=(32, 32), channel_order="GRAY", seed=5)
    keep = np.flatnonzero(digits.val.labels < 4)[:40]  # a "new" set with four of the ten labels
    write_class_folders(tmp_path / "new", digits.val.images[keep][..., 0], digits.val.labels[keep])
    config = TrainConfig(
        data=str(tmp_path / "new"),
        init_from=str(base.model_path),
        replay="digits",
        replay_fraction=0.6,
        epochs=1,
        out=str(tmp_path / "retrained"),
        patience=0,
    )
    result = train(config)
    n_new_train = result.validation["n_new_train"]
    assert result.validation["n_replay"] == replay_count(n_new_train, base.n_train, 0.6)
    assert result.n_train == n_new_train + result.validation["n_replay"]
    assert result.validation["old"]["n"] == base.n_val and result.validation["new"]["n"] == 40 - n_new_train
    metrics = json.loads((tmp_path / "retrained" / "metrics.json").read_text())
    assert set(metrics["validation"]) >= {"old", "new"}
    assert result.class_names == base.class_names
    with pytest.raises(ConfigError, match="not the model's labels"):
        write_class_folders(tmp_path / "bad", digits.val.images[:4][..., 0], [0, 1, 0, 1], class_names=("0", "x"))
        train(
            TrainConfig(data=str(tmp_path / "bad"), init_from=str(base.model_path), epochs=1, out=str(tmp_path / "b"))
        )


@pytest.mark.slow
def test_train_with_adversarial_runs_through_fit_and_saves_the_plain_model(tmp_path):
    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.train import TrainConfig, train

    # 16 px: what is checked is the wiring (FGSM steps through fit, the plain model saved), not the accuracy
    config = TrainConfig(data="digits", img_size=16, epochs=1, adversarial=4, out=str(tmp_path / "adv"), patience=0)
    result = train(config)
    model = load_keras_model(result.model_path)
    assert "adversarial" not in model.name and model.output_shape == (None, 10)
    assert 0.0 <= result.val_accuracy <= 1.0
    history = json.loads((tmp_path / "adv" / "history.json").read_text())
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])


@pytest.mark.slow
def test_a_class_with_one_collected_frame_goes_to_training(tmp_path, digits_run):
    from edgecls.data import load_dataset, write_class_folders
    from edgecls.train import TrainConfig, train

    base = digits_run.train_result  # the deployed model: the session's digits cnn
    digits = load_dataset("digits", image_size=(32, 32), channel_order="GRAY", seed=5)
    keep = np.concatenate([np.flatnonzero(digits.val.labels == 0)[:10], np.flatnonzero(digits.val.labels == 1)[:1]])
    write_class_folders(tmp_path / "new", digits.val.images[keep][..., 0], digits.val.labels[keep])
    config = TrainConfig(data=str(tmp_path / "new"), init_from=str(base.model_path), epochs=1, out=str(tmp_path / "r"))
    result = train(config)
    assert result.validation["n_new_train"] == 9 and result.validation["new"]["n"] == 2  # the lone "1" trains
