"""The pipeline's optional [compare] stage: the A/B verdict of this run's candidate against the deployed model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import write_pipeline

from edgecls.base.errors import ConfigError
from edgecls.pipeline import load_pipeline_config, run_pipeline


def write_pipeline_with_compare(tmp_path, data, compare: str, *, epochs: int = 3):
    path = write_pipeline(tmp_path / "p.toml", data, epochs=epochs, extra=f"[compare]\n{compare}")
    return load_pipeline_config(path, runs_dir=tmp_path / "runs")


@pytest.fixture
def deployed_model(tmp_path, shapes_folder):
    """A: a one-epoch model of the same classes, as if it were the one in the field."""
    from edgecls.train import TrainConfig, train

    result = train(
        TrainConfig(
            data=str(shapes_folder),
            model="cnn",
            img_size=16,
            epochs=1,
            batch_size=8,
            patience=0,
            seed=1,
            out=str(tmp_path / "deployed"),
        )
    )
    return result.model_path


@pytest.mark.slow
def test_compare_stage_gives_the_verdict_compare_gives_and_reruns_alone(tmp_path, shapes_folder, deployed_model):
    from edgecls.evaluate.compare import compare

    config = write_pipeline_with_compare(tmp_path, shapes_folder, f'a = "{deployed_model}"')
    result = run_pipeline(config)
    assert result.failed is None
    run = tmp_path / "runs" / "shapes"
    summary = json.loads((run / "compare" / "stage.json").read_text())["summary"]
    tflite = run / "export" / "train" / "model_fp32.tflite"
    assert summary["b"]["model"] == str(tflite)  # the deployed candidate: the only TFLite
    direct = compare(deployed_model, tflite, str(shapes_folder))
    assert summary["verdict"] == direct.verdict
    assert summary["mcnemar_p"] == pytest.approx(direct.mcnemar_p)
    assert (summary["a_only_correct"], summary["b_only_correct"]) == (direct.a_only_correct, direct.b_only_correct)
    assert summary["a"]["top1"] == direct.a["top1"] and summary["b"]["top1"] == direct.b["top1"]
    report = json.loads((run / "report.json").read_text())
    assert report["compare"]["verdict"] == direct.verdict
    markdown = (run / "report.md").read_text()
    assert "## A/B against the deployed model" in markdown and direct.verdict in markdown

    # a new deployed model (A replaced): only [compare] runs again
    replaced = tmp_path / "deployed-v2.keras"
    shutil.copy(tflite.parent.parent.parent / "train" / "model.keras", replaced)
    again = run_pipeline(write_pipeline_with_compare(tmp_path, shapes_folder, f'a = "{replaced}"\nb = "FP32 Keras"'))
    statuses = {outcome.stage: outcome.status for outcome in again.stages}
    assert statuses == {"train": "reused", "export": "reused", "compare": "ran"}
    summary = json.loads((run / "compare" / "stage.json").read_text())["summary"]
    assert summary["b"]["name"] == "FP32 Keras" and summary["b"]["model"].endswith("model.keras")
    assert summary["a_only_correct"] == summary["b_only_correct"] == 0  # the same weights on both sides
    assert summary["verdict"].startswith("no significant difference")


def test_compare_stage_needs_a_and_checks_files_before_training(tmp_path, shapes_folder):
    for compare, message in (
        ('b = "FP32 Keras"', r"\[compare\] needs a ="),
        (f'a = "{tmp_path / "missing.tflite"}"', r"\[compare\] a = .*no such file"),
        (f'a = "{shapes_folder}"', r"\[compare\] a = .*not a model file"),
        (f'a = "{tmp_path / "p.toml"}"\nb = "v2.onnx"', r"\[compare\] a = .*not a model file"),
        ('a = "x.keras"\nruns = "many"', r"\[compare\] runs must be an integer"),
    ):
        config = write_pipeline_with_compare(tmp_path, shapes_folder, compare)
        with pytest.raises(ConfigError, match=message):
            run_pipeline(config)
        assert not (tmp_path / "runs" / "shapes" / "train").exists()  # refused before anything trained


def test_compare_stage_names_the_artifacts_when_b_is_none_of_them(tmp_path, shapes_folder, deployed_model):
    config = write_pipeline_with_compare(
        tmp_path, shapes_folder, f'a = "{deployed_model}"\nb = "INT8 tflite"', epochs=1
    )
    result = run_pipeline(config)
    assert result.failed is not None and "b = 'INT8 tflite'" in result.failed
    assert "FP32 Keras" in result.failed and "FP32 tflite" in result.failed  # what it could have named
    assert [outcome.status for outcome in result.stages] == ["ran", "ran", "failed"]


RETRAIN = """
name = "loop"
data = "{data}"
seed = 0

[train]                                  # fine-tune the deployed model on the new frames, replaying the old data
init_from = "deployed/model.keras"       # relative: beside this file
replay = "{replay}"
replay_fraction = 0.5
epochs = 2
batch_size = 8
patience = 0

[export]
formats = ["tflite"]

[compare]
a = "deployed/model.keras"
"""


@pytest.mark.slow
def test_pipeline_retrains_from_the_deployed_model_and_compares_against_it(tmp_path, shapes_folder, deployed_model):
    assert deployed_model == tmp_path / "deployed" / "model.keras"
    path = tmp_path / "loop.toml"
    path.write_text(RETRAIN.format(data=shapes_folder, replay=shapes_folder))
    result = run_pipeline(load_pipeline_config(path, runs_dir=tmp_path / "runs"))
    assert result.failed is None
    run = tmp_path / "runs" / "loop"
    options = json.loads((run / "train" / "config.json").read_text())["options"]
    assert options["init_from"] == str(deployed_model) and options["replay"] == str(shapes_folder)
    summary = json.loads((run / "compare" / "stage.json").read_text())["summary"]
    assert summary["a"]["model"] == str(deployed_model)
    assert summary["b"]["model"] == str(run / "export" / "train" / "model_fp32.tflite")
    assert summary["n_images"] > 0 and summary["verdict"]
    # the report's confusion matrix evaluates the retrained model on the folder it records (once "<new>+replay")
    report = json.loads((run / "report.json").read_text())
    metrics = json.loads((run / "train" / "metrics.json").read_text())
    keras_row = next(row for row in report["rows"] if row["format"] == "keras")
    assert keras_row["top1"] == metrics["validation"]["new"]["top1"]  # the pipeline's data, as the exports
    assert metrics["validation"]["new"]["n"] == summary["n_images"]
    assert Path(report["plots"]["confusion matrix of the deployed model"]).is_file()
