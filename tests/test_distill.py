"""Distillation: the loss is textbook KD, the teacher is never updated, mismatches are clear errors,
and a short ``edgecls distill`` run writes a student that carries its metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecls.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_logits_loss_is_temperature_squared_kl_of_softened_outputs():
    from edgecls.distill import distillation_losses

    rng = np.random.default_rng(0)
    teacher_logits, student_logits = (rng.normal(0, 3, size=(8, 10)).astype(np.float32) for _ in range(2))
    temperature = 4.0
    p, q = _softmax(teacher_logits / temperature), _softmax(student_logits / temperature)
    expected = temperature**2 * np.mean(np.sum(p * np.log(p / q), axis=-1))
    (loss,) = distillation_losses(temperature)
    assert float(loss.compute_loss(teacher_logits, student_logits)) == pytest.approx(expected, rel=1e-4)


def _tiny_dataset(image_size=16, classes=3, n_per_class=8):
    from edgecls.data import Dataset, ImageSet

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), n_per_class)
    images = rng.integers(0, 60, size=(len(labels), image_size, image_size, 1), dtype=np.uint8)
    for i, label in enumerate(labels):  # class k: a bright band at rows 4k..4k+3
        images[i, 4 * label : 4 * label + 4] = 220
    part = lambda idx: ImageSet(images[idx], labels[idx], [f"img{i}" for i in idx])  # noqa: E731
    val = np.arange(0, len(labels), 4)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return Dataset("bands", tuple(f"c{k}" for k in range(classes)), part(train), part(val), "GRAY")


@pytest.mark.slow  # trains a model
def test_teacher_is_frozen_and_never_updated_while_the_student_learns():
    import keras

    from edgecls.distill import DistillLoss, distill_model
    from edgecls.models import build_model
    from edgecls.train import FitOptions

    dataset = _tiny_dataset()
    keras.utils.set_random_seed(0)
    teacher = build_model("cnn", num_classes=3, image_size=(16, 16), channels=1)
    student = build_model("cnn", num_classes=3, image_size=(16, 16), channels=1)
    teacher_before = [w.copy() for w in teacher.get_weights()]  # kernels and BatchNorm moving statistics
    student_before = [w.copy() for w in student.get_weights()]
    history = distill_model(
        teacher, student, dataset, FitOptions(epochs=2, batch_size=8), loss=DistillLoss(feature_layers=(("fc", "fc"),))
    )
    assert len(teacher_before) == len(teacher.get_weights())
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert teacher.trainable_weights == []  # the Distiller froze every teacher layer
    changed = sum(not np.array_equal(before, after) for before, after in zip(student_before, student.get_weights()))
    assert changed >= len(student_before) // 2  # kernels, biases, BN parameters and statistics moved
    assert len(history["distillation_loss"]) == 2 and all(np.isfinite(history["distillation_loss"]))
    # the full softmax student shares its layers with the logits model the Distiller trained
    pixels = dataset.val.images.astype(np.float32)
    logits = keras.Model(student.input, student.get_layer("logits").output)(pixels, training=False)
    np.testing.assert_allclose(np.asarray(student(pixels, training=False)), _softmax(np.asarray(logits)), atol=1e-5)


@pytest.mark.slow
def test_short_distillation_through_the_cli(digits_run, tmp_path):
    from edgecls.evaluate import evaluate
    from edgecls.runtime.metadata import read_model_info

    out = tmp_path / "distilled"
    result = invoke(
        "distill",
        "--teacher",
        digits_run.model_path,
        "--student",
        "cnn",
        "--epochs",
        "2",
        "--batch-size",
        "128",
        "--baseline",
        "--patience",
        "0",
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)  # stdout holds the JSON object and nothing else
    # the teacher is scored on exactly the split it was validated on when trained
    assert report["teacher_top1"] == pytest.approx(digits_run.val_accuracy, abs=1e-6)
    assert report["n_val"] == 359 and report["n_train"] == 1438
    assert 0.0 <= report["student_top1"] <= 1.0 and 0.0 <= report["baseline_top1"] <= 1.0
    assert report["student_params"] == report["teacher_params"] > 0 and report["student_macs"] > 0
    assert report["epochs_run"] == 2 and (out / "curves.png").stat().st_size > 0
    assert json.loads((out / "distill.json").read_text())["student_top1"] == report["student_top1"]
    history = json.loads((out / "history.json").read_text())
    assert len(history["distilled"]["distillation_loss"]) == 2 and len(history["baseline"]["loss"]) == 2
    # the distilled student is a full model with the teacher's contract inside, evaluable on its own
    info = read_model_info(report["model_path"])
    teacher_info = read_model_info(digits_run.model_path)
    assert (
        info.labels == teacher_info.labels
        and info.input_size == teacher_info.input_size
        and info.channel_order == "GRAY"
    )
    assert info.provenance["distilled"]["teacher"] == str(digits_run.model_path)
    assert evaluate(report["model_path"]).top1 == pytest.approx(report["student_top1"], abs=1e-6)
    assert evaluate(report["baseline_model_path"]).top1 == pytest.approx(report["baseline_top1"], abs=1e-6)


def _save_student(path, *, classes=10, size=32, channels=1):
    import keras

    from edgecls.models import build_model

    keras.utils.set_random_seed(0)
    build_model("cnn", num_classes=classes, image_size=(size, size), channels=channels).save(path)
    return path


@pytest.mark.slow
def test_a_distillation_that_leaves_the_student_worse_keeps_the_student_as_given(digits_run, tmp_path):
    """The student is the trained digits model itself; a learning rate of 30 wrecks it in one epoch. The file
    written holds the given weights, scores what they scored, and the report and its warning say so."""
    import keras

    from edgecls.distill import DistillConfig, distill
    from edgecls.evaluate import top1_accuracy, validation_set
    from edgecls.runtime.metadata import read_model_info

    out = tmp_path / "kept"
    result = distill(
        DistillConfig(
            teacher=str(digits_run.model_path),
            student=str(digits_run.model_path),
            epochs=1,
            learning_rate=30.0,
            patience=0,
            out=str(out),
        )
    )
    assert result.given_top1 == pytest.approx(digits_run.val_accuracy, abs=1e-6)
    assert result.distilled_top1 < result.given_top1 - 0.2  # the run really made it worse: the check can fail
    assert result.kept == "the student as given" and result.student_top1 == result.given_top1
    assert any("below the student as given" in warning for warning in result.warnings)
    kept = keras.models.load_model(out / "model.keras", compile=False)
    given = keras.models.load_model(digits_run.model_path, compile=False)
    assert all(np.array_equal(a, b) for a, b in zip(kept.get_weights(), given.get_weights(), strict=True))
    info = read_model_info(out / "model.keras")
    assert info.provenance["kept"] == "the student as given"
    assert info.provenance["val_accuracy"] == pytest.approx(result.given_top1, abs=1e-6)
    assert top1_accuracy(kept, validation_set(info)[1].val) == pytest.approx(result.given_top1, abs=1e-6)


@pytest.mark.parametrize(
    "student, message",
    [
        ({"classes": 5}, "classes differ: the teacher predicts 10 classes, the student 5"),
        ({"size": 16}, "input size differs: the teacher takes 32x32 pixels, the student 16x16"),
        ({"channels": 3}, "channels differ: the teacher takes 1 (GRAY), the student 3 (RGB)"),
    ],
)
def test_teacher_student_mismatch_is_a_one_line_error(digits_run, tmp_path, student, message):
    path = _save_student(tmp_path / "student.keras", **student)
    out = tmp_path / "never"
    result = invoke("distill", "--teacher", digits_run.model_path, "--student", path, "--out", out)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # checked before anything is written


def test_other_label_names_are_a_mismatch(digits_run, tmp_path):
    from edgecls.adapters.keras_io import load_keras_model, save_keras_model
    from edgecls.runtime.metadata import ModelInfo

    path = tmp_path / "letters.keras"
    save_keras_model(
        load_keras_model(_save_student(tmp_path / "s.keras")), path, ModelInfo(tuple("abcdefghij"), (32, 32), 1, "GRAY")
    )
    result = invoke("distill", "--teacher", digits_run.model_path, "--student", path)
    assert result.exit_code == 2 and "classes differ: teacher labels" in result.stderr


def test_data_with_other_classes_than_the_teacher_is_an_error(digits_run, shapes_folder, tmp_path):
    result = invoke(
        "distill",
        "--teacher",
        digits_run.model_path,
        "--student",
        "cnn",
        "--data",
        shapes_folder,
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 2 and "do not match the model's labels" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--student", "{student}", "--alpha", "0.35"], "--alpha sets the width of a registry student"),
        (["--kd-weight", "1.5"], "--kd-weight must be between 0 and 1"),
        (["--feature-layers", "conv3"], "is not TEACHER_LAYER:STUDENT_LAYER"),
        (["--feature-layers", "conv3:nope"], "the student has no layer 'nope'"),
        (["--feature-layers", "conv3:conv2"], "output shapes differ"),
        (["--student", "vgg99"], "unknown model 'vgg99'"),
        (["--resume"], "nothing to resume"),
    ],
)
def test_bad_options_are_one_line_errors(digits_run, tmp_path, args, message):
    student = _save_student(tmp_path / "student.keras") if "{student}" in args else None
    args = [str(student) if a == "{student}" else a for a in args]
    if "--student" not in args:
        args = ["--student", "cnn", *args]
    result = invoke("distill", "--teacher", digits_run.model_path, "--out", tmp_path / "run", *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr


@pytest.mark.slow  # trains a model
def test_an_interrupted_distillation_resumes_where_it_stopped(tmp_path):
    import keras

    from edgecls.adapters.keras_io import save_keras_model
    from edgecls.distill import DistillConfig, distill
    from edgecls.models import build_model
    from edgecls.runtime.metadata import ModelInfo

    keras.utils.set_random_seed(0)
    teacher = save_keras_model(
        build_model("cnn", num_classes=10, image_size=(16, 16), channels=1),
        tmp_path / "teacher.keras",
        ModelInfo(
            tuple(str(d) for d in range(10)),
            (16, 16),
            1,
            "GRAY",
            provenance={"dataset": "digits", "split": {"seed": 0, "val_split": 0.2}},
        ),
    )

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt  # as if the process were stopped after two epochs

    config = DistillConfig(
        teacher=str(teacher), student="cnn", epochs=3, batch_size=256, patience=0, out=str(tmp_path / "run")
    )
    with pytest.raises(KeyboardInterrupt):
        distill(config, callbacks=[Interrupt()])
    assert (tmp_path / "run" / "backup").exists() and not (tmp_path / "run" / "model.keras").exists()
    with pytest.raises(Exception, match="interrupted distillation; continue it with --resume"):
        distill(config)
    result = distill(DistillConfig(teacher=str(teacher), student="cnn", out=str(tmp_path / "run"), resume=True))
    assert result.epochs_run == 3 and result.n_val == 359  # two epochs before the interruption, one after
    assert not (tmp_path / "run" / "backup").exists() and (tmp_path / "run" / "model.keras").exists()
