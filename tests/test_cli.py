"""The spine's commands through typer's CliRunner: JSON on stdout, one-line errors, exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.models import get_entry, list_models

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.slow  # trains a model
def test_train_json_on_a_folder_with_bad_files(tmp_path):
    from test_data import make_messy_folder

    root = make_messy_folder(tmp_path / "messy")
    result = invoke("train", "--data", root, "--img-size", "16", "--epochs", "1", "--out", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)  # stdout holds the JSON object and nothing else
    assert len(report["skipped_files"]) == 3
    assert 0.0 <= report["val_accuracy"] <= 1.0 and report["model_path"].endswith("model.keras")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["skipped_files"]) == 3


def test_evaluate_and_export_json(digits_run, tmp_path):
    result = invoke("evaluate", digits_run.tflite, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_images"] == 359 and report["top1"] >= 0.95 and report["top5"] >= report["top1"]
    assert "litert" in report["engine"]
    result = invoke(
        "export", digits_run.model_path, "--format", "tflite", "--fp16", "--out", tmp_path / "fp16", "--json"
    )
    assert result.exit_code == 0, result.stderr
    (artifact,) = json.loads(result.stdout)["artifacts"]
    assert artifact["precision"] == "fp16" and artifact["parity_top1"] >= 0.99
    fp32_size = digits_run.tflite.stat().st_size
    assert artifact["size_bytes"] < 0.6 * fp32_size  # half-size weights
    for key in ("path", "format", "size_bytes"):
        assert key in artifact
    assert (
        invoke("export", digits_run.model_path, "--format", "tflite", "--out", tmp_path / "fp16").exit_code == 0
    )  # FP32 beside it
    recorded = json.loads((tmp_path / "fp16" / "export.json").read_text())
    assert sorted(a["precision"] for a in recorded["artifacts"]) == ["fp16", "fp32"]  # the FP16 entry is kept


def test_an_output_folder_that_is_a_file_and_the_registry_as_json(digits_run, tmp_path):
    taken = tmp_path / "afile"
    taken.write_text("mine")
    result = invoke("export", digits_run.model_path, "--out", taken)
    assert (
        result.exit_code == 2 and result.stderr.strip() == f"error: {taken}: File exists (a folder was expected there)"
    ), result.stderr
    assert taken.read_text() == "mine"
    result = invoke("models", "--json")
    assert result.exit_code == 0, result.stderr
    listed = json.loads(result.stdout)["models"]
    assert [m["name"] for m in listed] == list_models()  # the whole registry, in its order
    for m in listed:
        entry = get_entry(m["name"])
        assert (m["default_image_size"], m["min_image_size"], m["description"]) == (
            entry.default_image_size,
            entry.min_image_size,
            entry.description,
        )


def test_human_output_names_where_numbers_were_measured(digits_run):
    result = invoke("evaluate", digits_run.onnx)
    assert result.exit_code == 0, result.stderr
    assert "onnxruntime" in result.stdout and "threads" in result.stdout and "host" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "/no/such/folder"], "no such data folder"),
        (["train", "--model", "vgg99"], "unknown model 'vgg99'"),
        (["evaluate", "/no/model.tflite"], "no such model file"),
        (["export", "{notamodel}"], "not a Keras 3"),
        (["evaluate", "{notamodel_tflite}"], "fake.tflite: not a valid TFLite"),
        (["train", "--epochs", "0"], "--epochs must be 1 or more, got 0"),
        (["train", "--img-size", "0"], "--img-size must be 1 or more, got 0"),
        (["train", "--model", "mobilenetv2", "--alpha", "0"], "--alpha must be above 0"),
        (["train", "--lr", "-1"], "--lr must be above 0"),
        (["train", "--img-size", "16", "--weights", "{notamodel}"], "cnn has no pretrained base network"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    fake = tmp_path / "fake.keras"
    fake.write_text("not a model")
    fake_tflite = tmp_path / "fake.tflite"
    fake_tflite.write_text("not a model")
    args = [a.format(notamodel=fake, notamodel_tflite=fake_tflite) for a in args]
    result = invoke(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


NATIVE_LINES = """
import os, sys
from ai_edge_litert.interpreter import Interpreter
from edgecls.cli.app import native_chatter_dropped
with native_chatter_dropped() if sys.argv[2] == "filtered" else open(os.devnull):
    Interpreter(model_path=sys.argv[1]).allocate_tensors()  # LiteRT logs its XNNPACK line to descriptor 2
    os.write(2, b"fully_quantize: 0, inference_type: 6, input_inference_type: INT8, output_inference_type: INT8\\n")
    os.write(2, b"a native error the user must see\\n")
    print("progress from python", file=sys.stderr)
print("after", file=sys.stderr)
"""


def test_native_chatter_is_dropped_and_every_other_stderr_line_kept(digits_run):
    import subprocess
    import sys

    def stderr_lines(mode: str) -> list[str]:
        completed = subprocess.run(
            [sys.executable, "-c", NATIVE_LINES, str(digits_run.tflite), mode],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return completed.stderr.splitlines()

    assert "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in stderr_lines("plain")  # what a user saw before
    assert sorted(stderr_lines("filtered")) == ["a native error the user must see", "after", "progress from python"]
