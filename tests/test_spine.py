"""Train → export → evaluate on digits: accuracy, parity, metadata, runs/ outputs, resume, safety."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgecls.base.errors import ModelError
from edgecls.base.fileio import atomic_path


def test_training_reaches_accuracy_and_writes_the_run(digits_run):
    assert digits_run.val_accuracy >= 0.95, digits_run.val_accuracy  # 8 epochs; `make demo` trains 20
    for name in ("model.keras", "history.json", "metrics.json", "config.json", "curves.png", "split.json"):
        assert (digits_run.run_dir / name).is_file(), name
    config = json.loads((digits_run.run_dir / "config.json").read_text())
    assert config["options"]["seed"] == 0 and config["environment"]["tensorflow"]
    split = json.loads((digits_run.run_dir / "split.json").read_text())
    assert len(split["val_sources"]) == 359 and split["seed"] == 0
    history = json.loads((digits_run.run_dir / "history.json").read_text())
    assert len(history["val_accuracy"]) == 8
    # the weights only, no optimizer state: a trained model's size compares with a pruned one's
    from edgecls.adapters.keras_io import load_keras_model

    with zipfile.ZipFile(digits_run.model_path) as archive:
        weights = archive.getinfo("model.weights.h5").file_size
    params = sum(int(np.prod(w.shape)) for w in load_keras_model(digits_run.model_path).weights)
    assert weights < 1.3 * 4 * params, (weights, params)  # Adam's two moments would make it about 3x


def test_export_parity_and_metadata(digits_run):
    from edgecls.runtime import read_model_info

    for artifact in digits_run.export_result.artifacts:
        assert artifact.parity_top1 == 1.0 and artifact.parity_max_abs < 1e-4, artifact
        assert "validation images of digits" in artifact.parity_sample
        info = read_model_info(artifact.path)
        assert info.labels == tuple(str(d) for d in range(10))
        assert info.input_size == (32, 32) and info.channels == 1 and info.channel_order == "GRAY"
        assert info.provenance["dataset"] == "digits" and info.provenance["format"] == artifact.format
    keras_info = read_model_info(digits_run.model_path)
    assert keras_info.provenance["split"]["val_split"] == 0.2


def test_runtime_agrees_with_keras_on_the_validation_split(digits_run):
    from edgecls.evaluate import evaluate, model_info, predict_scores, validation_set

    images, _ = validation_set(model_info(digits_run.model_path))
    keras_top1 = predict_scores(digits_run.model_path, images).argmax(1)
    for artifact in (digits_run.tflite, digits_run.onnx):
        agreement = np.mean(predict_scores(artifact, images).argmax(1) == keras_top1)
        assert agreement >= 0.995, (artifact, agreement)
        result = evaluate(artifact)
        assert result.n_images == 359 and result.top1 == pytest.approx(
            float(np.mean(keras_top1 == images.labels)), abs=0.005
        )
        assert Path(result.confusion_png).is_file() and len(result.per_class) == 10


def test_classifier_predicts_camera_frames(digits_run):
    import cv2

    from edgecls.evaluate import model_info, validation_set
    from edgecls.runtime import Classifier

    images, _ = validation_set(model_info(digits_run.model_path))
    for path in (digits_run.tflite, digits_run.onnx):
        classifier = Classifier(path, top_k=3)
        frames = [
            cv2.resize(cv2.cvtColor(images.images[i], cv2.COLOR_GRAY2BGR), (640, 480), interpolation=cv2.INTER_NEAREST)
            for i in range(40)
        ]
        predictions = classifier.predict_batch(frames)
        assert all(len(p) == 3 and p[0][1] >= p[1][1] >= p[2][1] for p in predictions)
        correct = np.mean([int(p[0][0]) == label for p, label in zip(predictions, images.labels[:40])])
        assert correct >= 0.85, correct
        assert (
            classifier.predict(frames[0]) == predictions[0][:3]
            or classifier.predict(frames[0])[0][0] == predictions[0][0][0]
        )


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_safe_mode_refuses_code_in_a_model_file(tmp_path):
    import keras

    from edgecls.adapters.keras_io import load_keras_model

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ModelError, match="unsafe-load"):
        load_keras_model(path)
    assert load_keras_model(path, unsafe=True) is not None
    not_a_model = tmp_path / "fake.keras"
    not_a_model.write_text("hello")
    with pytest.raises(ModelError, match="not a Keras 3"):
        load_keras_model(not_a_model)


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import keras
    from edgecls.train import TrainConfig, train

    class KillMidEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 3:
                os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the third epoch

    config = TrainConfig(
        data=sys.argv[1], model="cnn", img_size=16, epochs=4, batch_size=4, patience=0, augment="none", out=sys.argv[2],
        precise_bn=int(sys.argv[3]),
    )
    train(config, callbacks=[KillMidEpoch()])
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("precise_bn", [0, 16])  # BatchNorm statistics re-estimated before validation too
def test_resume_after_kill_9_continues_from_the_last_completed_epoch(tmp_path, shapes_folder, precise_bn):
    from edgecls.train import TrainConfig, train

    run_dir = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(shapes_folder), str(run_dir), str(precise_bn)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (run_dir / "model.keras").exists() and (run_dir / "backup").is_dir()
    options = dict(
        data=str(shapes_folder),
        model="cnn",
        img_size=16,
        epochs=4,
        batch_size=4,
        patience=0,
        augment="none",
        precise_bn=precise_bn,
    )
    with pytest.raises(Exception, match="--resume"):
        train(TrainConfig(**options, out=str(run_dir)))
    result = train(TrainConfig(out=str(run_dir), resume=True))
    epochs = [int(float(row.split(",")[0])) for row in (run_dir / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2, 3]  # epochs 0 and 1 from the killed run, 2 and 3 after resuming
    assert result.epochs_run == 4 and result.val_accuracy >= 0.5
    assert not (run_dir / "backup").exists()
    with zipfile.ZipFile(result.model_path) as archive:
        assert "edgecls.json" in archive.namelist()
    # the resumed run sees the same batches and dropout masks as an uninterrupted one: same weights
    from edgecls.adapters.keras_io import load_keras_model

    uninterrupted = train(TrainConfig(**options, out=str(tmp_path / "clean")))
    for resumed_weights, clean_weights in zip(
        load_keras_model(result.model_path).get_weights(), load_keras_model(uninterrupted.model_path).get_weights()
    ):
        np.testing.assert_array_equal(resumed_weights, clean_weights)


def test_best_epoch_breaks_accuracy_ties_by_the_lower_validation_loss():
    from edgecls.train import best_epoch

    history = {"val_accuracy": [0.9, 1.0, 1.0, 1.0, 0.95], "val_loss": [0.5, 0.20, 0.05, 0.08, 0.1]}
    assert best_epoch(history) == 3  # not the first epoch to reach 100 %
    assert best_epoch({"val_accuracy": [0.5, 0.7, 0.6]}) == 2  # no loss recorded: accuracy alone
    assert best_epoch({"val_accuracy": [0.8, 0.8], "val_loss": [float("nan"), 0.3]}) == 2


@pytest.mark.filterwarnings("ignore")  # Keras warns once per layer it cannot fill before it raises
def test_weights_of_another_network_are_a_short_error(tmp_path):
    import keras

    from edgecls.base.errors import ModelError
    from edgecls.models import build_model

    other = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), include_top=False, weights=None)
    other.save_weights(tmp_path / "v3.weights.h5")
    with pytest.raises(ModelError) as caught:
        build_model("mobilenetv2", num_classes=3, image_size=(32, 32), channels=3, weights=tmp_path / "v3.weights.h5")
    message = str(caught.value)
    assert "cannot load these weights" in message and "\n" not in message and len(message) < 600, message[:2000]
