"""The train stage's choices: starting weights, two-phase fine-tuning and its resume, the chance-level
warning, and folders too small to split (issues 15 and 19)."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import numpy as np
import pytest
from conftest import write_legacy_h5, write_png
from typer.testing import CliRunner

from edgecls.base.errors import ConfigError, DataError
from edgecls.cli import app


@pytest.mark.slow
def test_default_weights_for_a_photo_folder_are_imagenet_from_the_keras_cache(
    tmp_path, monkeypatch, shapes_folder, no_network
):
    """No --weights on a photo folder with mobilenetv2 α 0.35: the cached ImageNet file, unchanged by phase 1."""
    import keras

    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.models.pretrained import imagenet_file
    from edgecls.train import TrainConfig, train

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    keras.utils.set_random_seed(123)
    stock = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35)
    write_legacy_h5(
        stock,
        tmp_path / "keras-home" / "models" / imagenet_file("mobilenetv2", alpha=0.35, image_size=(32, 32)).file_name,
    )

    result = train(
        TrainConfig(
            data=str(shapes_folder),
            model="mobilenetv2",
            alpha=0.35,
            img_size=32,
            epochs=1,
            finetune_epochs=0,
            batch_size=8,
            augment="none",
            out=str(tmp_path / "run"),
        )
    )
    assert result.weights == "imagenet" and result.phase_epochs == [1]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["options"]["weights"] == "imagenet"
    trained = load_keras_model(result.model_path)
    # phase 1 freezes the base, BatchNorm in inference mode: every base tensor is still the file's, exactly
    compared = 0
    for theirs in (layer for layer in stock.layers if layer.weights):
        for a, b in zip(trained.get_layer(theirs.name).get_weights(), theirs.get_weights()):
            np.testing.assert_array_equal(a, b)
            compared += 1
    assert compared > 100
    assert not np.allclose(trained.get_layer("logits").get_weights()[0], 0)  # the head trained
    assert no_network == []


def test_imagenet_offline_with_an_empty_cache_is_one_line_before_training(
    tmp_path, monkeypatch, shapes_folder, no_network
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(socket.gaierror("test: offline")))
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(shapes_folder),
            "--model",
            "mobilenetv2",
            "--alpha",
            "0.35",
            "--img-size",
            "32",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 2, result.output
    # Keras' get_file says "Downloading data from URL" before it fails; edgecls' own error is one line after it
    lines = [
        line for line in result.output.strip().splitlines() if not line.startswith("Downloading data from https://")
    ]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5" in lines[0]
        and "--weights none" in lines[0]
    )
    assert not (tmp_path / "run").exists()  # nothing was loaded, built or trained


def test_weights_defaults_and_refusals():
    from edgecls.train import TrainConfig, choose_weights

    assert choose_weights(TrainConfig(data="digits", model="mobilenetv2"), 96, "RGB") == "none"
    assert choose_weights(TrainConfig(data="photos", model="cnn"), 32, "RGB") == "none"
    assert (
        choose_weights(TrainConfig(data="photos", model="mobilenetv3small", alpha=0.35), 96, "RGB") == "none"
    )  # Keras has none
    assert choose_weights(TrainConfig(data="photos", model="mobilenetv2", weights="none"), 96, "RGB") == "none"
    assert (
        TrainConfig().phase2_epochs(pretrained=True) == 10
        and TrainConfig(freeze_base=True).phase2_epochs(pretrained=True) == 0
    )
    assert TrainConfig(finetune_epochs=0).phase2_epochs(pretrained=False) == 0
    with pytest.raises(ConfigError, match="trains from scratch"):
        TrainConfig(finetune_epochs=3).phase2_epochs(pretrained=False)
    with pytest.raises(ConfigError, match="choose one"):
        TrainConfig(unfreeze=10, unfreeze_from="block_16_project")
    with pytest.raises(ConfigError, match="--finetune-lr"):
        TrainConfig(finetune_lr=0)


def test_unfreeze_leaves_batchnorm_frozen_and_names_a_wrong_layer():
    import keras

    from edgecls.models import build_model
    from edgecls.train.finetune import base_layers, freeze_base, unfreeze_top

    model = build_model("mobilenetv2", num_classes=3, image_size=(32, 32), channels=3, alpha=0.35, freeze_base=True)
    freeze_base(model)
    assert not any(layer.trainable for layer in base_layers(model)) and model.get_layer("logits").trainable
    unfrozen = unfreeze_top(model, from_layer="block_16_expand")
    assert unfrozen[0] == "block_16_expand" and "Conv_1" in unfrozen
    assert not model.get_layer("block_16_expand_BN").trainable and not model.get_layer("block_15_project").trainable
    everything = unfreeze_top(model)
    assert all(
        layer.trainable != isinstance(layer, keras.layers.BatchNormalization)
        for layer in base_layers(model)
        if layer.weights
    )
    assert len(everything) > len(unfrozen)
    with pytest.raises(ConfigError, match="no such layer") as caught:
        unfreeze_top(model, from_layer="block_99")
    assert "\n" not in str(caught.value)


class Interrupted(Exception):
    """Stands for a crash (kill -9 is tests/test_spine.py's): the fit stops without its on_train_end."""


def _interrupt_in_phase_2():
    import keras

    class InterruptInPhase2(keras.callbacks.Callback):
        fits = 0

        def on_train_begin(self, logs=None):
            InterruptInPhase2.fits += 1

        def on_epoch_begin(self, epoch, logs=None):
            if InterruptInPhase2.fits == 2 and epoch == 1:
                raise Interrupted("phase 2, second epoch")

    return InterruptInPhase2()


@pytest.mark.slow
def test_two_phases_are_marked_and_resume_after_an_interruption_in_phase_2(tmp_path, shapes_folder):
    import keras

    from edgecls.train import TrainConfig, train

    keras.utils.set_random_seed(5)
    start = tmp_path / "start.weights.h5"  # a "pretrained" base: phase 1 and 2 as with ImageNet weights
    keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35).save_weights(
        start
    )
    run_dir = tmp_path / "run"
    options = dict(
        data=str(shapes_folder),
        model="mobilenetv2",
        alpha=0.35,
        img_size=32,
        weights=str(start),
        # one epoch of phase 1 and two of phase 2, interrupted in its second: the least that shows phase 1 is not
        # run again and phase 2 goes on from its backup (each epoch saves a MobileNetV2 twice: about a second)
        epochs=1,
        finetune_epochs=2,
        unfreeze=30,
        batch_size=8,
        patience=0,
        augment="none",
        out=str(run_dir),
    )
    with pytest.raises(Interrupted):
        train(TrainConfig(**options), callbacks=[_interrupt_in_phase_2()])
    assert (run_dir / "phase1" / "done.json").exists() and (run_dir / "phase2" / "backup").is_dir()
    assert not (run_dir / "model.keras").exists()
    with pytest.raises(ConfigError, match="--resume"):
        train(TrainConfig(**options))

    result = train(TrainConfig(out=str(run_dir), resume=True))
    history = json.loads((run_dir / "history.json").read_text())
    assert history["phase"] == [1, 2, 2] and history["epoch"] == [0, 1, 2]
    assert result.phase_epochs == [1, 2] and result.epochs_run == 3
    csv_rows = (run_dir / "history.csv").read_text().splitlines()
    assert csv_rows[0].split(",")[-1] == "phase" and [row.split(",")[-1] for row in csv_rows[1:]] == ["1", "2", "2"]
    phase1_epochs = [row.split(",")[0] for row in (run_dir / "phase1" / "history.csv").read_text().splitlines()[1:]]
    phase2_epochs = [row.split(",")[0] for row in (run_dir / "phase2" / "history.csv").read_text().splitlines()[1:]]
    assert phase1_epochs == ["0"] and phase2_epochs == ["0", "1"]  # phase 1 not run again, phase 2 continued
    assert not (run_dir / "phase2" / "backup").exists() and not (run_dir / "phase1" / "done.json").exists()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["phases"] == {"phase1_epochs": 1, "phase2_epochs": 2, "finetune_lr": pytest.approx(1e-4)}


def _squares(root: Path, *, mixed_val: bool) -> Path:
    """train/ and val/ of bright vs dark squares on noise; with ``mixed_val`` half of each val/ class
    folder holds the other class's images: labels that do not match the images."""
    rng = np.random.default_rng(0)
    for subset, count in (("train", 12), ("val", 8)):
        for label, other, level in (("bright", "dark", 220), ("dark", "bright", 30)):
            for index in range(count):
                image = rng.integers(90, 160, size=(24, 24, 3), dtype=np.uint8)
                image[6:18, 6:18] = level
                folder = other if mixed_val and subset == "val" and index % 2 else label
                write_png(root / subset / folder / f"{label}{index:02d}.png", image)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("mixed_val", [True, False])
def test_chance_level_validation_is_warned_and_kept_in_the_result(tmp_path, caplog, mixed_val):
    from edgecls.train import TrainConfig, train

    root = _squares(tmp_path / "squares", mixed_val=mixed_val)
    with caplog.at_level(logging.WARNING, logger="edgecls"):
        result = train(
            TrainConfig(
                data=str(root),
                model="cnn",
                img_size=16,
                epochs=6,
                batch_size=2,
                patience=0,
                augment="none",
                out=str(tmp_path / "run"),
            )
        )
    warned = [record for record in caplog.records if "at chance" in record.getMessage()]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    if mixed_val:  # training reaches 100 %, validation stays at 50 %: warned once, in the result
        assert result.val_accuracy == pytest.approx(0.5) and len(warned) == 1
        assert len(result.warnings) == 1 and "labels that do not match" in result.warnings[0]
        assert metrics["warnings"] == result.warnings
    else:
        assert result.val_accuracy == 1.0 and warned == [] and metrics["warnings"] == []


def _tiny_folder(root: Path, counts: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for label, count in counts.items():
        for index in range(count):
            write_png(root / label / f"{index}.png", rng.integers(0, 255, size=(20, 20, 3), dtype=np.uint8))
    return root


def test_a_folder_too_small_to_split_is_one_line_before_the_first_epoch(tmp_path):
    import keras

    from edgecls.data import load_dataset
    from edgecls.train import TrainConfig, train

    root = _tiny_folder(tmp_path / "tiny", {"a": 1, "b": 1, "c": 3})
    started = []

    class Started(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            started.append(True)

    with pytest.raises(DataError) as caught:
        train(TrainConfig(data=str(root), img_size=16, epochs=1, out=str(tmp_path / "run")), callbacks=[Started()])
    message = str(caught.value)
    assert "\n" not in message and "'a' has 1, 'b' has 1" in message and "at least 2 images" in message, message
    assert started == [] and not (tmp_path / "run").exists()
    # prune, distill, evaluate and the pipeline split through load_dataset too
    with pytest.raises(DataError, match="at least 2 images"):
        load_dataset(str(root), image_size=(16, 16))
    assert len(load_dataset(str(_tiny_folder(tmp_path / "two", {"a": 2, "b": 2})), image_size=(16, 16)).val) == 2
    cli = CliRunner().invoke(app, ["train", "--data", str(root), "--img-size", "16", "--out", str(tmp_path / "cli")])
    assert cli.exit_code == 2 and len(cli.output.strip().splitlines()) == 1 and "at least 2 images" in cli.output


def test_a_chance_warning_the_kept_model_outgrew_is_taken_back_at_the_same_level(caplog):
    from edgecls.train.watch import chance_watch, kept_warnings

    watch = chance_watch(np.repeat(np.arange(4), 50))  # chance 25 %
    for epoch in range(3):  # three epochs at chance while training learns
        watch.on_epoch_end(epoch, {"val_accuracy": 0.25, "accuracy": 0.95})
    assert watch.message is not None
    with caplog.at_level(logging.WARNING, logger="edgecls.train.watch"):
        assert kept_warnings(watch, 0.995) == []  # the best epoch kept is far above chance
    assert any("recovered to 99.5%" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert kept_warnings(watch, 0.26) == [watch.message]
