"""``edgecls pipeline``: stages skip when nothing changed, re-run downstream of a change, stop cleanly on failure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import write_pipeline
from typer.testing import CliRunner

from edgecls.base.errors import ConfigError
from edgecls.cli import app
from edgecls.pipeline import load_pipeline_config, run_pipeline

runner = CliRunner()


@pytest.mark.slow
def test_rerun_skips_and_a_change_reruns_only_downstream(tmp_path, shapes_folder):
    import keras

    class Epochs(keras.callbacks.Callback):  # what a progress bar sees
        seen: list[str] = []

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append(f"{epoch + 1}/{self.params['epochs']}")

    config_path = write_pipeline(tmp_path / "p.toml", shapes_folder)
    first = run_pipeline(load_pipeline_config(config_path, runs_dir=tmp_path / "runs"), callbacks=[Epochs()])
    assert [(s.stage, s.status) for s in first.stages] == [("train", "ran"), ("export", "ran")]
    assert Epochs.seen == ["1/2", "2/2"]
    model_mtime = (tmp_path / "runs/shapes/train/model.keras").stat().st_mtime_ns
    again = run_pipeline(load_pipeline_config(config_path, runs_dir=tmp_path / "runs"), callbacks=[Epochs()])
    assert [s.status for s in again.stages] == ["reused", "reused"] and len(Epochs.seen) == 2
    write_pipeline(config_path, shapes_folder, export_formats='["tflite", "onnx"]')
    changed = run_pipeline(load_pipeline_config(config_path, runs_dir=tmp_path / "runs"))
    assert [s.status for s in changed.stages] == ["reused", "ran"]
    assert (tmp_path / "runs/shapes/train/model.keras").stat().st_mtime_ns == model_mtime
    report = json.loads(Path(changed.report_json).read_text())
    assert {row["format"] for row in report["rows"]} == {"keras", "tflite", "onnx"}
    assert all(row["top1"] is not None for row in report["rows"])
    markdown = Path(changed.report_md).read_text()
    assert "| FP32 Keras | keras |" in markdown and "FP32 tflite" in markdown
    finished = json.loads((tmp_path / "runs/shapes/train/stage.json").read_text())["finished_at"]
    assert f"- train: reused from {finished}" in markdown and "- export: ran in this run" in markdown
    assert report["stages"][0] == {"stage": "train", "status": "reused", "seconds": 0.0, "reused_from": finished}


@pytest.mark.slow
def test_a_stage_is_reused_only_while_its_resolved_options_inputs_and_code_are_unchanged(
    tmp_path, shapes_folder, monkeypatch
):
    """A cache that serves stale work is worse than none: a changed default, a changed image (same size, same
    modification time: its bytes are what count) or other code re-runs the stages it decides; --force re-runs one."""
    import os

    import edgecls.train.config
    from edgecls.pipeline import keys

    config_path = write_pipeline(tmp_path / "p.toml", shapes_folder)  # [train] sets no learning rate: the default

    def statuses(**options):
        result = run_pipeline(load_pipeline_config(config_path, runs_dir=tmp_path / "runs"), **options)
        return [stage.status for stage in result.stages]

    assert statuses() == ["ran", "ran"]
    assert statuses() == ["reused", "reused"]
    monkeypatch.setattr(edgecls.train.config, "DEFAULT_LEARNING_RATE", 2e-3)  # an upgrade's new default
    assert statuses() == ["ran", "ran"]
    resolved = json.loads((tmp_path / "runs/shapes/train/started.json").read_text())["resolved"]
    assert resolved["learning_rate"] == 2e-3 and resolved["epochs"] == 2 and resolved["weights"] == "none"
    assert statuses() == ["reused", "reused"]
    image = sorted((shapes_folder / "dark").glob("*.png"))[0]
    before = image.stat()
    pixels = image.read_bytes()
    from conftest import write_png

    write_png(image, np.full((40, 40, 3), 200, np.uint8))
    assert image.read_bytes() != pixels
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert statuses() == ["ran", "ran"]
    assert statuses(force=("export",)) == ["reused", "ran"]  # the same model, exported again: the same bytes
    monkeypatch.setattr(keys, "code_digest", lambda: "0.2.0+another-build")
    assert statuses() == ["ran", "ran"]
    with pytest.raises(ConfigError, match="--force quantize: not a stage"):
        statuses(force=("quantize",))


def test_a_failing_stage_stops_and_keeps_earlier_outputs(tmp_path, shapes_folder):
    config_path = write_pipeline(
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
    assert [(s.stage, s.status) for s in resumed.stages] == [("train", "reused"), ("distill", "resumed")]
    clean = run_pipeline(load_pipeline_config(config_path, runs_dir=tmp_path / "clean"))

    def top1(result):
        return [(row["name"], row["top1"]) for row in json.loads(Path(result.report_json).read_text())["rows"]]

    assert top1(resumed) == top1(clean)


# --- a Jetson in [bench] quantizes the ONNX as TensorRT builds it ------------------------------------


@pytest.mark.parametrize(
    "bench, quantize_extra, scheme",
    [
        ('["host", "jetson"]', "", "tensorrt"),
        ('["jetson-nano"]', "", "tensorrt"),
        ('["host", "rpi5"]', "", None),  # not set: QuantizeConfig's default, cpu
        ('["jetson"]', 'onnx_scheme = "cpu"', "cpu"),  # the file's own choice is kept
    ],
)
def test_a_jetson_bench_target_picks_the_tensorrt_onnx_scheme(tmp_path, bench, quantize_extra, scheme):
    from edgecls.pipeline.checks import check_options
    from edgecls.pipeline.keys import stage_key
    from edgecls.pipeline.resolve import resolved_options

    def key(pipeline):
        return stage_key("quantize", resolved_options(pipeline, "quantize", pipeline.stages["quantize"], {}), {}, "k")

    extra = f'\n[quantize]\nprecisions = ["int8"]\ncalib = "calib"\n{quantize_extra}\n\n[bench]\ntargets = {bench}\n'
    config = load_pipeline_config(write_pipeline(tmp_path / "p.toml", tmp_path, extra=extra))
    check_options(config)
    assert config.stages["quantize"].get("onnx_scheme") == scheme
    plain = load_pipeline_config(write_pipeline(tmp_path / "q.toml", tmp_path, extra=extra.replace(bench, '["host"]')))
    changed = key(config) != key(plain)
    assert changed == (scheme == "tensorrt")  # adding a Jetson re-runs [quantize]


# --- plots a person can read ----------------------------------------------------------------------


def crowded_rows() -> list[dict]:
    """What a digits pipeline reports: three FP32 exports, three quantized artifacts,
    at nearly one latency and top-1."""
    rows = []
    for stage, prefix, top1 in (
        ("train", "", 0.97),
        ("prune", "pruned ", 0.95),
        ("distill", "distilled ", 0.965),
        ("quantize", "distilled ", 0.965),
    ):
        kinds = (
            [("int8", "tflite"), ("fp16", "tflite"), ("int8", "onnx")]
            if stage == "quantize"
            else [("fp32", "keras"), ("fp32", "tflite"), ("fp32", "onnx")]
        )
        for index, (precision, fmt) in enumerate(kinds):
            latency = {
                target: {"p50": 0.030 + 0.001 * index + (0.002 if target == "rpi5" else 0.0), "where": f"{target} here"}
                for target in ("host", "rpi5")
            }
            if fmt == "keras":
                latency = {target: {**figures, "via": "FP32 TFLite export"} for target, figures in latency.items()}
            rows.append(
                {
                    "name": f"{prefix}{precision.upper()} {'Keras' if fmt == 'keras' else fmt}".strip(),
                    "stage": stage,
                    "format": fmt,
                    "precision": precision,
                    "path": f"runs/x/{stage}/model_{precision}.{fmt}",
                    "top1": top1 - 0.0005 * index,
                    "latency": latency,
                }
            )
    return rows


def test_accuracy_latency_labels_are_unique_and_do_not_overlap():
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    from edgecls.base.plots import pyplot
    from edgecls.pipeline.scatter import accuracy_latency_figure

    rows = crowded_rows()
    figure = accuracy_latency_figure(rows, ["host", "rpi5"])
    try:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        page = figure.bbox
        expected = sorted(
            row["name"] for row in rows if row["format"] != "keras"
        )  # a .keras row's latency is its export's
        for axis in figure.axes:
            labels = [text for text in axis.texts if text.get_text()]
            assert sorted(text.get_text() for text in labels) == expected
            assert len(set(expected)) == len(expected) == 9
            boxes = [
                Text.get_window_extent(text, renderer) for text in labels
            ]  # the words; Annotation's adds its leader line
            for i, box in enumerate(boxes):
                assert page.contains(box.x0, box.y0) and page.contains(box.x1, box.y1), labels[i].get_text()
                for j in range(i):
                    assert not box.overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
            # the data is crowded: labels at a fixed offset from their points (the old plot) would overlap
            naive = [
                Bbox.from_bounds(*axis.transData.transform(text.xy) + 3, box.width, box.height)
                for text, box in zip(labels, boxes)
            ]
            assert any(naive[i].overlaps(naive[j]) for i in range(len(naive)) for j in range(i))
    finally:
        pyplot().close(figure)


def test_place_labels_never_overlaps_even_on_one_point():
    from edgecls.pipeline.scatter import place_labels

    anchors = [(100.0, 100.0)] * 12 + [(100.0 + 3 * i, 100.0 + i) for i in range(12)]
    sizes = [(60.0 + 5 * (i % 4), 9.0) for i in range(len(anchors))]
    corners = place_labels(anchors, sizes, (0.0, 0.0, 400.0, 300.0), obstacles=[(96.0, 96.0, 104.0, 104.0)])
    boxes = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(corners, sizes)]
    for i, a in enumerate(boxes):
        assert not (a[0] < 104 and a[2] > 96 and a[1] < 104 and a[3] > 96)  # off the marker
        for b in boxes[:i]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_artifact_labels_follow_the_report_table_and_are_unique():
    from edgecls.pipeline.labels import artifact_labels

    rows = [row for row in crowded_rows() if row["format"] != "keras"]
    labels = artifact_labels(rows)
    assert (
        labels["runs/x/train/model_fp32.tflite"] == "FP32 tflite"
        and labels["runs/x/prune/model_fp32.onnx"] == "pruned FP32 onnx"
    )
    assert len(set(labels.values())) == len(rows)
    twice = artifact_labels(
        [
            {"name": "FP32 tflite", "stage": "train", "path": "a"},
            {"name": "FP32 tflite", "stage": "export", "path": "b"},
            {"name": "FP32 tflite", "stage": "export", "path": "c"},
        ]
    )
    assert twice == {"a": "FP32 tflite", "b": "FP32 tflite (export)", "c": "FP32 tflite (export) #2"}


def test_latency_plot_names_models_by_the_labels_given(tmp_path, monkeypatch):
    from edgecls.base.plots import pyplot
    from edgecls.bench.report import plot_latency
    from edgecls.runtime.results import LatencyStats, MeasureResult, MeasureRun

    plt = pyplot()
    samples = [0.03, 0.031, 0.032]
    stats = LatencyStats.of(samples)
    models = [f"runs/x/{stage}/model_fp32.tflite" for stage in ("train", "prune", "distill")]
    results = [
        MeasureResult(
            model,
            "litert",
            "2",
            "XNNPACK",
            1,
            "fp32",
            "float32",
            3,
            1,
            1.0,
            1.0,
            stats,
            30.0,
            1.0,
            stats,
            1.0,
            1.0,
            100,
            samples_ms=samples,
        )
        for model in models
    ]
    run = MeasureRun("host", "this host", False, {"hostname": "h"}, {"runs": 3, "warmup": 1, "threads": 1}, results)
    figures = []
    monkeypatch.setattr(plt, "close", lambda figure=None: figures.append(figure))
    plot_latency(run, tmp_path / "plain.png")
    plot_latency(
        run,
        tmp_path / "named.png",
        labels=dict(zip(models, ("FP32 tflite", "pruned FP32 tflite", "distilled FP32 tflite"))),
    )
    plain, named = ([label.get_text() for label in figure.axes[0].get_yticklabels()] for figure in figures)
    assert plain == ["model_fp32.tflite"] * 3  # what the plot said before
    assert named == ["FP32 tflite", "pruned FP32 tflite", "distilled FP32 tflite"]
    for figure in figures:
        monkeypatch.undo()
        plt.close(figure)


# --- the deployed candidate: the fastest artifact within the accuracy budget, where the target itself timed them ----


def _row(name, fmt, precision, top1_change, size, latency=None, *, path=None):
    return {
        "name": name,
        "format": fmt,
        "precision": precision,
        "path": path or f"{name.replace(' ', '_')}.{fmt}",
        "size_bytes": size,
        "top1_change": top1_change,
        "latency": latency or {},
    }


def test_the_deployed_candidate_is_the_fastest_tflite_within_budget_on_a_target_measured_there():
    from edgecls.pipeline.candidate import deployed_artifact

    def on(p50, *, on_target=True):
        return {"host": {"p50": p50, "on_target": on_target}}

    keras = _row("FP32 Keras", "keras", "fp32", 0.0, 900, {"host": {"p50": 0.35, "on_target": True, "via": "export"}})
    fp32 = _row("FP32 tflite", "tflite", "fp32", 0.0, 800, on(0.35))
    fp16 = _row("FP16 tflite", "tflite", "fp16", 0.0, 400, on(0.40))
    int8 = _row("INT8 tflite", "tflite", "int8", -0.3, 200, on(0.54))  # slower than its float siblings here
    assert deployed_artifact([keras, fp32, fp16, int8])["name"] == "FP32 tflite"
    int8["latency"] = on(0.20)
    assert deployed_artifact([keras, fp32, fp16, int8])["name"] == "INT8 tflite"
    int8["top1_change"] = -1.5  # fastest, but past the 1-point budget
    assert deployed_artifact([keras, fp32, fp16, int8])["name"] == "FP32 tflite"
    assert deployed_artifact([keras, fp32, fp16, int8], max_drop=2.0)["name"] == "INT8 tflite"
    # latencies measured here with a Pi's settings are not the Pi's: INT8 (within budget) as before, else the smallest
    for row in (fp32, fp16, int8):
        row["latency"] = {"rpi5": {"p50": 9.0 if row is int8 else 0.1, "on_target": False}}
    int8["top1_change"] = -0.3
    assert deployed_artifact([keras, fp32, fp16, int8])["name"] == "INT8 tflite"
    int8["top1_change"] = -1.5
    assert deployed_artifact([keras, fp32, fp16, int8])["name"] == "FP16 tflite"


def test_the_report_warns_of_an_int8_artifact_slower_than_its_float_sibling(tmp_path):
    from test_bench import _tiny_artifact

    from edgecls.pipeline.candidate import slower_int8_warnings
    from edgecls.pipeline.labels import artifact_labels

    int8 = _tiny_artifact(tmp_path / "model_int8.onnx", "int8", "aaaa")
    fp32 = _tiny_artifact(tmp_path / "model_fp32.onnx", "fp32", "aaaa")
    unrelated = _tiny_artifact(tmp_path / "pruned_fp32.onnx", "fp32", "bbbb")
    rows = [
        _row("INT8 onnx", "onnx", "int8", 0.0, 1, {"host": {"p50": 2.0}, "rpi5": {"p50": 1.0}}, path=str(int8)),
        _row("FP32 onnx", "onnx", "fp32", 0.0, 1, {"host": {"p50": 1.0}, "rpi5": {"p50": 3.0}}, path=str(fp32)),
        _row("pruned FP32 onnx", "onnx", "fp32", 0.0, 1, {"host": {"p50": 0.1}}, path=str(unrelated)),
    ]
    assert slower_int8_warnings(rows, ["host", "rpi5"], artifact_labels(rows)) == [
        "INT8 onnx is slower than its float sibling FP32 onnx on host (2.000 vs 1.000 ms p50)"
    ]


def test_the_distill_row_names_the_student_the_stage_kept_and_its_warning_reaches_the_report(tmp_path, monkeypatch):
    """distill keeps the student as given when distilling made it worse: the pipeline's row must not call that
    file "distilled", and the warning goes into the stage summary the report lists."""
    from types import SimpleNamespace

    import edgecls.distill
    from edgecls.pipeline import resolve, stages
    from edgecls.pipeline.report import stage_warnings

    model = tmp_path / "model.keras"
    model.write_bytes(b"a model")
    warning = "distillation ended at 41.00% held-out top-1, below the student as given (93.00%)"
    for kept, name, warnings in (
        ("the student as given", "undistilled student Keras", [warning]),
        ("the student trained alone (--baseline)", "student alone Keras", [warning]),
        ("distilled", "distilled Keras", []),
    ):
        result = SimpleNamespace(
            model_path=str(model), teacher_top1=0.95, student_top1=0.93, kept=kept, distilled_top1=0.41,
            warnings=warnings, student_params=10, student_macs=20,
        )  # fmt: skip
        monkeypatch.setattr(resolve, "distill_config", lambda *args, **kwargs: None)
        monkeypatch.setattr(edgecls.distill, "distill", lambda config, callbacks=(), result=result: result)
        summary = stages.distill(None, {}, tmp_path, {}, resuming=False)
        assert [row["name"] for row in summary["artifacts"]] == [name]
        assert (summary["kept"], summary["distilled_top1"], summary["student_top1"]) == (kept, 0.41, 0.93)
        assert stage_warnings({"distill": summary}) == [f"distill: {w}" for w in warnings]
