"""``edgecls pipeline``: stages skip when nothing changed, re-run downstream of a change, stop cleanly on failure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.errors import ConfigError
from edgecls.pipeline import load_pipeline_config, run_pipeline

runner = CliRunner()


def write_config(path: Path, data: Path, *, export_formats='["tflite"]', extra: str = "") -> Path:
    path.write_text(
        f"""
name = "shapes"
data = "{data}"
seed = 0

[train]
model = "cnn"
img_size = 16
epochs = 2
batch_size = 8
patience = 0

[export]
formats = {export_formats}
{extra}
"""
    )
    return path


@pytest.mark.slow
def test_rerun_skips_and_a_change_reruns_only_downstream(tmp_path, shapes_folder):
    import keras

    class Epochs(keras.callbacks.Callback):  # what a progress bar sees
        seen: list[str] = []

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append(f"{epoch + 1}/{self.params['epochs']}")

    config_path = write_config(tmp_path / "p.toml", shapes_folder)
    first = run_pipeline(load_pipeline_config(config_path, runs_dir=tmp_path / "runs"), callbacks=[Epochs()])
    assert [(s.stage, s.status) for s in first.stages] == [("train", "ran"), ("export", "ran")]
    assert Epochs.seen == ["1/2", "2/2"]
    model_mtime = (tmp_path / "runs/shapes/train/model.keras").stat().st_mtime_ns
    again = run_pipeline(load_pipeline_config(config_path, runs_dir=tmp_path / "runs"), callbacks=[Epochs()])
    assert [s.status for s in again.stages] == ["skipped", "skipped"] and len(Epochs.seen) == 2
    write_config(config_path, shapes_folder, export_formats='["tflite", "onnx"]')
    changed = run_pipeline(load_pipeline_config(config_path, runs_dir=tmp_path / "runs"))
    assert [s.status for s in changed.stages] == ["skipped", "ran"]
    assert (tmp_path / "runs/shapes/train/model.keras").stat().st_mtime_ns == model_mtime
    report = json.loads(Path(changed.report_json).read_text())
    assert {row["format"] for row in report["rows"]} == {"keras", "tflite", "onnx"}
    assert all(row["top1"] is not None for row in report["rows"])
    markdown = Path(changed.report_md).read_text()
    assert "| FP32 Keras | keras |" in markdown and "FP32 tflite" in markdown


def test_a_failing_stage_stops_and_keeps_earlier_outputs(tmp_path, shapes_folder):
    config_path = write_config(
        tmp_path / "p.toml", shapes_folder, extra='\n[quantize]\nprecisions = ["int8"]\n'
    )  # INT8 without calib: fails when it runs
    result = runner.invoke(app, ["pipeline", str(config_path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.stderr
    assert "stage quantize" in result.stderr and "calibration" in result.stderr
    assert (tmp_path / "runs/shapes/train/model.keras").is_file() and (
        tmp_path / "runs/shapes/train/stage.json"
    ).is_file()
    assert (
        not (tmp_path / "runs/shapes/quantize/stage.json").exists() and not (tmp_path / "runs/shapes/export").exists()
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ('name = "x"\n[train]\nepochs = 1\n[deploy]\nx = 1\n', "unknown key(s) deploy"),
        ('name = "x"\n[export]\nformats = ["tflite"]\n', "needs a [train] table"),
        ('name = "x"\n[train]\nepoch = 1\n', "unknown option(s) epoch"),
        ('name = "x"\nseed = "abc"\n[train]\n', "seed must be an integer, got 'abc'"),
        ('name = "x"\n[train]\nepochs = "two"\n', "[train] epochs must be an integer, got 'two'"),
        ('name = "x"\n[train]\n[prune]\nratio = "half"\n', "[prune] ratio must be a number, got 'half'"),
        (
            'name = "x"\n[train]\n[quantize]\nprecisions = ["int9"]\n',
            "[quantize] precisions has 'int9'; choose from int8, fp16",
        ),
        ('name = "x"\n[train]\n[export]\nformats = ["tflit"]\n', "[export] formats has 'tflit'"),
        ('name = "x"\n[train]\n[export]\n[bench]\ntargets = ["nosuch"]\n', "nosuch"),
    ],
)
def test_config_errors_name_the_key_before_anything_runs(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_pipeline(load_pipeline_config(path, runs_dir=tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()  # no stage started


def test_relative_paths_are_found_beside_the_file_then_above_it(tmp_path, monkeypatch):
    configs = tmp_path / "proj" / "configs"
    (configs / "imgs").mkdir(parents=True)
    (tmp_path / "proj" / "calib_data" / "digits").mkdir(parents=True)
    (configs / "p.toml").write_text('name = "p"\ndata = "imgs"\n[train]\n')
    monkeypatch.chdir(tmp_path)
    config = load_pipeline_config("proj/configs/p.toml")
    assert config.resolve("imgs") == str(Path("proj/configs/imgs"))  # beside the file, though ../calib_data exists
    assert config.resolve("calib_data/digits") == str(
        Path("proj/calib_data/digits")
    )  # a repository's calib_data/ above it
    assert config.resolve("student.keras") == str(
        Path("proj/configs/student.keras")
    )  # missing: named where it was looked for


KILL_DURING_DISTILLATION = """
import os, signal, sys
import keras
import edgecls.train

real_fit = edgecls.train.fit

class KillMidEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 5:
            os.kill(os.getpid(), signal.SIGKILL)

def fit(model, dataset, **options):
    distiller = options.get("compile") is False
    baseline = str(options.get("run_dir", "")).endswith("baseline")
    if (distiller, baseline)[sys.argv[3] == "baseline"]:  # kill -9 in the second epoch of that fit
        options["callbacks"] = [*options.get("callbacks", ()), KillMidEpoch()]
    return real_fit(model, dataset, **options)

edgecls.train.fit = fit
from edgecls.pipeline import load_pipeline_config, run_pipeline
run_pipeline(load_pipeline_config(sys.argv[1], runs_dir=sys.argv[2]))
"""


@pytest.mark.parametrize("phase", ["distillation", "baseline"])
@pytest.mark.slow
def test_killed_during_distillation_resumes_to_the_same_report(tmp_path, phase):
    import subprocess
    import sys

    config_path = tmp_path / "kd.toml"
    config_path.write_text(
        f"""
name = "kd"
data = "digits"
seed = 0

[train]
model = "cnn"
img_size = 16
epochs = 2
patience = 0

[distill]
epochs = 3
patience = 0
baseline = {str(phase == "baseline").lower()}
"""
    )
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_DISTILLATION, str(config_path), str(tmp_path / "runs"), phase],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "runs/kd/train/stage.json").is_file() and not (tmp_path / "runs/kd/distill/stage.json").exists()
    resumed = run_pipeline(load_pipeline_config(config_path, runs_dir=tmp_path / "runs"))
    assert [(s.stage, s.status) for s in resumed.stages] == [("train", "skipped"), ("distill", "resumed")]
    clean = run_pipeline(load_pipeline_config(config_path, runs_dir=tmp_path / "clean"))

    def top1(result):
        return [(row["name"], row["top1"]) for row in json.loads(Path(result.report_json).read_text())["rows"]]

    assert top1(resumed) == top1(clean)
