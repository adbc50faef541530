"""``edgecls bench``: what each result holds, where it says it ran, device state, reports."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecls.base.errors import ConfigError, DataError
from edgecls.bench import BenchConfig, bench, prepare_eval_set
from edgecls.bench.report import COLUMNS, table_rows, to_markdown, write_reports
from edgecls.runtime.device import (
    MachineInfo,
    clocks_locked,
    describe_where,
    parse_nvpmodel,
    parse_throttled,
    read_board,
    read_device_state,
)
from edgecls.runtime.measure import _oversubscription_note, measure_model
from edgecls.runtime.model import Classifier
from edgecls.runtime.results import LatencyStats, MeasureRun
from edgecls.runtime.scoring import evaluate_folder
from edgecls.runtime.targets import get_target

# --- device state, from recorded outputs ----------------------------------------

RECORDED = {
    "vcgencmd get_throttled": "throttled=0x50005\n",  # under-voltage + throttled now, and since boot
    "nvpmodel -q (Orin Nano)": "NV Power Mode: 15W\n0\n",
    "nvpmodel -q (Nano)": "NVPM WARN: fan mode is not set!\nNV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n",
}


def test_throttled_flags():
    flags = parse_throttled(RECORDED["vcgencmd get_throttled"])
    assert flags["under_voltage_now"] and flags["throttled_now"]
    assert not flags["arm_frequency_capped_now"] and not flags["soft_temperature_limit_now"]
    assert (
        flags["under_voltage_since_boot"]
        and flags["throttled_since_boot"]
        and not flags["arm_frequency_capped_since_boot"]
    )
    assert not any(
        value for key, value in parse_throttled("throttled=0x0").items() if key.endswith(("_now", "_since_boot"))
    )
    assert parse_throttled("VCHI initialization failed")["parsed"] is False


def test_nvpmodel():
    assert parse_nvpmodel(RECORDED["nvpmodel -q (Orin Nano)"]) == {"name": "15W", "id": 0}
    assert parse_nvpmodel(RECORDED["nvpmodel -q (Nano)"]) == {"name": "MAXN", "id": 0}


def _fake_root(
    root: Path, *, model: str, temps: dict[str, int], governor: str, freqs: tuple[int, int, int], cpus: int = 4
) -> Path:
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    for index, (name, millidegrees) in enumerate(temps.items()):
        zone = root / f"sys/class/thermal/thermal_zone{index}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(name + "\n")
        (zone / "temp").write_text(f"{millidegrees}\n")
    current, low, high = freqs
    for cpu in range(cpus):
        folder = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        folder.mkdir(parents=True)
        for file_name, value in (
            ("scaling_governor", governor),
            ("scaling_cur_freq", current),
            ("scaling_min_freq", low),
            ("scaling_max_freq", high),
        ):
            (folder / file_name).write_text(f"{value}\n")
    return root


def test_raspberry_pi_state(tmp_path):
    root = _fake_root(
        tmp_path,
        model="Raspberry Pi 5 Model B Rev 1.0",
        temps={"cpu-thermal": 81350},
        governor="ondemand",
        freqs=(1500000, 1500000, 2400000),
    )
    calls = []

    def runner(argv):
        calls.append(argv)
        return RECORDED["vcgencmd get_throttled"] if argv == ["vcgencmd", "get_throttled"] else None

    state = read_device_state(root=root, run=runner)
    assert state["kind"] == "raspberry-pi" and state["board"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert state["soc_temp_c"] == pytest.approx(81.35) and state["governor"] == "ondemand"
    assert state["cpu_mhz"] == 1500 and state["cpu_max_mhz"] == 2400
    assert state["throttled"] is True and state["throttle_flags"]["under_voltage_now"]
    assert ["nvpmodel", "-q"] not in calls


def test_jetson_state_and_locked_clocks(tmp_path):
    root = _fake_root(
        tmp_path,
        model="NVIDIA Jetson Orin Nano Developer Kit",
        temps={"cpu-thermal": 48000, "gpu-thermal": 47500},
        governor="schedutil",
        freqs=(1510400, 1510400, 1510400),
        cpus=6,
    )
    gpu = root / "sys/class/devfreq/17000000.ga10b"
    gpu.mkdir(parents=True)
    (gpu / "min_freq").write_text("624750000\n")
    (gpu / "max_freq").write_text("624750000\n")
    state = read_device_state(
        root=root, run=lambda argv: RECORDED["nvpmodel -q (Orin Nano)"] if argv[0] == "nvpmodel" else None
    )
    assert state["kind"] == "jetson" and state["power_mode"] == {"name": "15W", "id": 0}
    assert state["clocks_locked"] is True and state["throttled"] is False
    (gpu / "min_freq").write_text("306000000\n")  # jetson_clocks not run: the GPU may idle down
    assert clocks_locked(root=root) is False


def test_plain_pc_state(tmp_path):
    (tmp_path / "sys").mkdir()
    state = read_device_state(root=tmp_path, run=lambda argv: pytest.fail(f"ran {argv} on a PC"))
    assert state == {"kind": "other", "board": "", "throttled": False}


def test_where_is_never_a_device_it_was_not():
    pc = MachineInfo("vm", "x86_64", "", "Linux", "3.11", 2)
    pi = MachineInfo("pi", "aarch64", "Raspberry Pi 5 Model B Rev 1.0", "Linux", "3.11", 4)
    assert describe_where(get_target("rpi5"), pc) == (False, "x86_64 host with rpi5 settings")
    assert describe_where(get_target("rpi5"), pi) == (True, "measured on Raspberry Pi 5 Model B Rev 1.0")
    assert describe_where(get_target("rpi4"), pi)[0] is False
    assert describe_where(get_target("jetson"), pi) == (False, "aarch64 host with jetson-orin-nano settings")
    assert describe_where(get_target("host"), pc) == (True, "this x86_64 host (vm)")


def test_latency_stats():
    stats = LatencyStats.of([float(v) for v in range(1, 101)])
    assert (stats.min, stats.p50, stats.mean) == (1.0, 50.5, 50.5)
    assert stats.p90 == pytest.approx(90.1) and stats.p99 == pytest.approx(99.01)
    assert stats.std == pytest.approx(np.std(np.arange(1, 101)))


# --- measuring real artifacts ---------------------------------------------------


@pytest.fixture(scope="module")
def digits_eval(digits_run, tmp_path_factory) -> Path:
    return prepare_eval_set("digits", (str(digits_run.tflite),), tmp_path_factory.mktemp("digits-eval"))


def test_digits_eval_set_is_the_validation_split(digits_run, digits_eval):
    files = sorted(digits_eval.rglob("*.png"))
    assert len(files) == digits_run.train_result.n_val
    assert {path.parent.name for path in files} == {str(d) for d in range(10)}


def test_measure_model_and_top1_equals_evaluate(digits_run, digits_eval):
    from edgecls.evaluate import evaluate

    measured = measure_model(digits_run.tflite, threads=1, runs=20, warmup=3, data=str(digits_eval))
    assert measured.engine == "litert" and measured.provider == "XNNPACK/CPU" and measured.threads == 1
    assert measured.precision == "fp32" and measured.input_dtype == "float32"
    assert (
        len(measured.samples_ms) == 20 and measured.latency_ms.min <= measured.latency_ms.p50 <= measured.latency_ms.p99
    )
    assert measured.e2e_ms > 0 and measured.fps > 0 and measured.cold_start_ms > 0 and measured.load_ms > 0
    assert measured.peak_rss_mb >= measured.baseline_rss_mb > 0
    assert measured.size_bytes == digits_run.tflite.stat().st_size
    reference = evaluate(digits_run.tflite, "digits", out_dir=digits_eval.parent / "eval-out")
    assert measured.n_eval == reference.n_images
    assert measured.top1 == pytest.approx(reference.top1, abs=0.5 / reference.n_images)


def test_bench_command_json_and_reports(digits_run, tmp_path):
    from typer.testing import CliRunner

    from edgecls.cli import app

    out = tmp_path / "report"
    models = [str(digits_run.tflite), str(digits_run.onnx)]
    result = CliRunner().invoke(
        app,
        [
            "bench",
            *models,
            "--target",
            "rpi",
            "--data",
            "digits",
            "--runs",
            "15",
            "--warmup",
            "2",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert [Path(r["model"]).suffix for r in document["results"]] == [".tflite", ".onnx"]
    for entry in document["results"]:
        assert {
            "model",
            "target",
            "where",
            "engine",
            "provider",
            "threads",
            "latency_ms",
            "fps",
            "cold_start_ms",
            "e2e_ms",
            "peak_rss_mb",
            "size_bytes",
            "top1",
        } <= set(entry)
        assert {"p50", "p90", "p99", "mean"} <= set(entry["latency_ms"])
        assert entry["target"] == "rpi5" and entry["threads"] == 4  # the rpi5 profile's threads
        if "Raspberry Pi 5" not in read_board():  # i.e. everywhere but on a Pi 5
            assert entry["where"].endswith("host with rpi5 settings") and entry["on_target"] is False
        oversubscribed = [note for note in entry["notes"] if "oversubscribed" in note]
        assert len(oversubscribed) == ((os.cpu_count() or 1) < 4), entry["notes"]
    tflite, onnx = document["results"]
    assert (
        tflite["engine"] == "litert" and onnx["engine"] == "onnxruntime" and onnx["provider"] == "CPUExecutionProvider"
    )
    assert tflite["top1"] == pytest.approx(onnx["top1"], abs=0.01) and tflite["top1"] > 0.5
    assert document["settings"]["n_eval"] == tflite["n_eval"] > 0
    saved = json.loads((out / "bench.json").read_text())
    assert [r["top1"] for r in saved["results"]] == [r["top1"] for r in document["results"]]
    markdown = (out / "bench.md").read_text()
    assert "| model_fp32.tflite | fp32 |" in markdown and "with rpi5 settings" in markdown
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_more_threads_than_cores_is_flagged():
    assert _oversubscription_note(4, 2) == ["4 threads on 2 cores: oversubscribed, latency is not what 4 cores give"]
    assert _oversubscription_note(2, 2) == [] and _oversubscription_note(1, 16) == []


def test_bench_table_on_a_pipe_keeps_rows_whole(digits_run, tmp_path):
    """The human table: one line per model however narrow, a file name with brackets shown as it is."""
    from typer.testing import CliRunner

    from edgecls.cli import app

    model = tmp_path / "digits[v2]_fp32.tflite"
    shutil.copy(digits_run.tflite, model)
    result = CliRunner().invoke(
        app,
        [
            "bench",
            str(model),
            "--target",
            "host",
            "--threads",
            "1",
            "--runs",
            "5",
            "--warmup",
            "1",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "digits[v2]_fp32.tflite" in line]
    assert len(rows) == 1 and "fp32" in rows[0] and "litert" in rows[0], result.output
    assert "measured on this" in result.output and "1 thread, 5 runs after 1 warm-up" in result.output


def test_throttled_runs_are_flagged(digits_run, tmp_path):
    measured = measure_model(digits_run.tflite, threads=1, runs=5, warmup=1)
    throttled = dataclasses.replace(
        measured, throttled=True, target="rpi5", where="target device rpi5 (Raspberry Pi 5)"
    )
    settings = {"runs": 5, "warmup": 1, "threads": 4}
    run = MeasureRun("rpi5", "target device rpi5 (Raspberry Pi 5)", True, {"hostname": "pi"}, settings, [throttled])
    assert "THROTTLED" in to_markdown(run)
    paths = write_reports(run, tmp_path)
    assert "THROTTLED" in paths["markdown"].read_text()
    assert MeasureRun.from_dict(json.loads(paths["json"].read_text())).results[0].throttled is True


def test_bad_inputs_are_clear(digits_run, tmp_path):
    import cv2

    keras_model = tmp_path / "model.keras"
    keras_model.write_bytes(b"zip")
    with pytest.raises(ConfigError, match="export a .keras model first"):
        bench(BenchConfig(models=(str(keras_model),)))
    with pytest.raises(ConfigError, match="unknown target"):
        bench(BenchConfig(models=(str(digits_run.tflite),), target="pi-zero"))
    wrong = tmp_path / "eval" / "cat"
    wrong.mkdir(parents=True)
    with pytest.raises(DataError, match="not labels: cat"):
        evaluate_folder(Classifier(digits_run.tflite), wrong.parent)
    (wrong / "0.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    with pytest.raises(
        DataError, match=rf"^{wrong.parent}: class folders must be named after .*not labels: cat"
    ):  # the user's folder, before any timing
        bench(BenchConfig(models=(str(digits_run.tflite),), data=str(wrong.parent), runs=100_000))


@pytest.mark.slow  # trains a model
def test_a_folder_scores_what_evaluate_scores_never_training_images(tmp_path, shapes_folder):
    """A model trained on a folder: bench --data on that folder scores its held-out split, as edgecls evaluate does."""
    from edgecls.evaluate import evaluate
    from edgecls.export import export
    from edgecls.train import TrainConfig, train

    trained = train(
        TrainConfig(
            data=str(shapes_folder), model="cnn", img_size=16, epochs=1, patience=0, out=str(tmp_path / "run"), seed=0
        )
    )
    tflite = next(a.path for a in export(trained.model_path, formats=("tflite",)).artifacts if a.format == "tflite")
    result = bench(
        BenchConfig(models=(str(tflite),), data=str(shapes_folder), runs=3, warmup=0, out=str(tmp_path / "b"))
    ).run.results[0]
    evaluated = evaluate(tflite, str(shapes_folder))
    assert result.n_eval == 6  # round(20 % of 16) = 3 held out of each class, not all 32 images
    assert result.top1 == pytest.approx(evaluated.top1)


def test_a_folder_sample_and_its_val_folder(digits_run, digits_eval, tmp_path):
    from edgecls.bench.evalset import select_eval_files

    sample = select_eval_files(digits_eval, tmp_path / "sample", limit=50)
    assert len(list(sample.rglob("*.png"))) == 50
    (tmp_path / "split" / "val").mkdir(parents=True)
    shutil.copytree(digits_eval / "3", tmp_path / "split" / "val" / "3")
    picked = select_eval_files(tmp_path / "split", tmp_path / "picked")  # a val/ folder wins over the rest
    assert [p.name for p in picked.iterdir()] == ["3"]


def test_the_provider_actually_used_is_reported(digits_run):
    jetson = get_target("jetson")
    measured = measure_model(digits_run.onnx, threads=1, providers=jetson.providers, runs=3, warmup=0)
    import onnxruntime

    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        assert measured.provider == "CPUExecutionProvider"
        assert measured.notes == ["asked for TensorrtExecutionProvider, ONNX Runtime used CPUExecutionProvider"]


def test_the_delegate_actually_used_is_reported(digits_run, tmp_path):
    """XNNPACK is named only when it took over part of the graph: a graph of ops it lacks says so."""
    import tensorflow as tf

    assert Classifier(digits_run.tflite).engine.provider == "XNNPACK/CPU"

    @tf.function(input_signature=[tf.TensorSpec([1, 2, 2, 3], tf.float32)])
    def product_of_pixels(image):  # REDUCE_PROD: a TFLite built-in that XNNPACK does not take
        return tf.reduce_prod(image, axis=[1, 2])

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [product_of_pixels.get_concrete_function()], product_of_pixels
    )
    undelegated = tmp_path / "reduce_prod.tflite"
    undelegated.write_bytes(converter.convert())
    classifier = Classifier(undelegated, threads=1)
    assert classifier.engine.provider == "CPU (built-in kernels)"
    assert measure_model(undelegated, threads=1, runs=2, warmup=0).provider == "CPU (built-in kernels)"
    frame = np.full((2, 2, 3), 2, np.uint8)
    assert classifier.predict(frame, top_k=1) == [("0", 16.0)]  # 2**4 per channel: it ran, on the built-in kernels


def test_litert_kernel_families_are_chosen_by_name(digits_run):
    """``kernels=``: XNNPACK (default), the built-in or the reference kernels run the same graph to the same scores
    (FP32: to float rounding); a family LiteRT lacks, or kernels for an ONNX file, is a clear error."""
    from edgecls.base.errors import ConfigError
    from edgecls.evaluate import evaluation_images, model_info, predict_scores

    images = evaluation_images(model_info(digits_run.tflite), "digits").images.images[:200]
    runs = {
        kind: Classifier(digits_run.tflite, threads=1, kernels=kind) for kind in ("default", "builtin", "reference")
    }
    assert {kind: run.engine.provider for kind, run in runs.items()} == {
        "default": "XNNPACK/CPU",
        "builtin": "CPU (built-in kernels)",
        "reference": "CPU (reference kernels)",
    }
    scores = {kind: predict_scores(run, images) for kind, run in runs.items()}
    assert scores["default"].shape == (200, 10)
    for kind in ("builtin", "reference"):
        np.testing.assert_allclose(scores[kind], scores["default"], atol=1e-4)
        assert np.mean(scores[kind].argmax(1) == scores["default"].argmax(1)) >= 0.99
    with pytest.raises(ConfigError, match="kernel families are default, builtin, reference"):
        Classifier(digits_run.tflite, kernels="gpu")
    with pytest.raises(ConfigError, match="ONNX Runtime"):
        Classifier(digits_run.onnx, kernels="builtin")


# --- start times: first start and TensorRT's cached start, with a fake TensorRT onnxruntime ----------

BUILD_S = 0.3  # what the fake TensorRT takes to build an engine; loading one from the cache takes nothing


def _tiny_onnx(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weights = helper.make_tensor("w", TensorProto.FLOAT, [64, 10], np.linspace(-1, 1, 640, dtype=np.float32).tolist())
    nodes = [
        helper.make_node("Flatten", ["pixels"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 8, 8, 1])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 10])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """``onnxruntime-gpu`` as a Jetson shows it: a session with a TensorRT cache path builds (slowly) an engine
    file there unless one is there already, as ONNX Runtime does; inference really runs on the CPU."""
    import time

    onnxruntime = pytest.importorskip("onnxruntime")
    real_session = onnxruntime.InferenceSession
    received: list[list] = []

    def session(path, sess_options=None, providers=None, **kwargs):
        received.append(providers)
        options = dict(providers[0][1]) if providers and isinstance(providers[0], tuple) else {}
        if options.get("trt_engine_cache_enable") == "True":
            cache = Path(options["trt_engine_cache_path"])
            if not list(cache.glob("*.engine")):
                time.sleep(BUILD_S)
                (cache / "TensorrtExecutionProvider_TRTKernel_graph_g_1_0_0_sm87.engine").write_bytes(b"engine")
        return real_session(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(available))
    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    return received


def test_tensorrt_first_and_cached_start_are_reported_apart(tmp_path, fake_tensorrt):
    model = _tiny_onnx(tmp_path / "model.onnx")
    jetson = get_target("jetson-nano")  # precisions fp16 first
    first = measure_model(model, threads=1, providers=jetson.providers, runs=2, warmup=0, precision="fp16")
    assert first.start_s.cache_hit_before is False and first.start_s.first >= BUILD_S
    assert (
        first.start_s.cached is not None and first.start_s.cached < BUILD_S / 2
    )  # the second session loaded the engine
    assert [providers[0][1]["trt_fp16_enable"] for providers in fake_tensorrt] == ["True", "True"]
    assert not any("cache" in note for note in first.notes)  # the fake runs on the CPU: only that is noted
    again = measure_model(model, threads=1, providers=jetson.providers, runs=2, warmup=0, precision="fp16")
    assert again.start_s.cache_hit_before is True and again.start_s.first < BUILD_S / 2
    document = json.loads(json.dumps(first.to_dict()))
    assert document["start_s"] == dataclasses.asdict(first.start_s)
    assert type(first).from_dict(document).start_s == first.start_s
    row = dict(zip(COLUMNS, table_rows(_one_run(first))[0]))
    assert row["start s"].startswith(f"{first.start_s.first:.2f} (engine built), cached ")


def test_the_targets_first_precision_reaches_tensorrt(tmp_path, fake_tensorrt):
    from edgecls.runtime.measure import measure_models
    from edgecls.runtime.results import MeasureConfig

    model = _tiny_onnx(tmp_path / "model.onnx")
    run = measure_models(
        MeasureConfig(models=(str(model),), target=get_target("jetson-nano"), runs=2, warmup=0, isolate=False)
    )
    assert run.settings["precision"] == "fp16" and fake_tensorrt[0][0][1]["trt_fp16_enable"] == "True"
    fake_tensorrt.clear()
    (tmp_path / "model.onnx.trt-cache").rename(tmp_path / "old-cache")
    run = measure_models(
        MeasureConfig(models=(str(model),), target=get_target("jetson"), runs=2, warmup=0, isolate=False)
    )
    options = fake_tensorrt[0][0][1]  # int8 first for an Orin; a float graph: FP16 kernels, no INT8
    assert run.settings["precision"] == "int8" and (options["trt_fp16_enable"], options["trt_int8_enable"]) == (
        "True",
        "False",
    )


def test_an_engine_without_a_cache_reports_its_load_time_alone(tmp_path, fake_tensorrt):
    model = _tiny_onnx(tmp_path / "model.onnx")
    measured = measure_model(model, threads=1, providers=("CPUExecutionProvider",), runs=2, warmup=0, precision="fp32")
    assert len(fake_tensorrt) == 1 and fake_tensorrt[0] == ["CPUExecutionProvider"]  # one session, no second start
    assert measured.start_s.cached is None and measured.start_s.cache_hit_before is None
    assert 0 < measured.start_s.first <= measured.load_ms / 1e3
    document = measured.to_dict()
    del document["start_s"]  # a device with an older edgecls
    assert type(measured).from_dict(document).start_s is None


def _one_run(result) -> MeasureRun:
    return MeasureRun("jetson-nano", "here", False, {"hostname": "h"}, {"runs": 2, "warmup": 0, "threads": 1}, [result])


def _shapes_split(root: Path) -> Path:
    """train/ and val/: a bright or a dark square on noise, 40x40 BGR frames (as conftest's shapes_folder)."""
    from conftest import write_png

    rng = np.random.default_rng(1)
    for split, count in (("train", 24), ("val", 8)):
        for label, level in (("bright", 200), ("dark", 50)):
            for i in range(count):
                image = rng.integers(80, 170, size=(40, 40, 3), dtype=np.uint8)
                image[10:30, 10:30] = level + rng.integers(-20, 20)
                write_png(root / split / label / f"{i:02d}.png", image)
    return root


@pytest.mark.slow  # trains a model
def test_bench_corruptions_score_what_evaluate_corruptions_scores(tmp_path):
    """bench --corruptions corrupts each frame where the model runs: the same figures as edgecls evaluate."""
    from edgecls.evaluate.robustness import evaluate_corruptions
    from edgecls.export import export
    from edgecls.runtime.corruptions import list_corruptions
    from edgecls.train import TrainConfig, train

    folder = _shapes_split(tmp_path / "shapes")
    trained = train(
        TrainConfig(data=str(folder), model="cnn", img_size=16, epochs=8, batch_size=8, out=str(tmp_path / "run"))
    )
    model = next(a.path for a in export(trained.model_path, formats=("tflite",)).artifacts if a.format == "tflite")
    report = bench(
        BenchConfig(
            models=(str(model),),
            data=str(folder),
            runs=3,
            warmup=0,
            out=str(tmp_path / "b"),
            corruptions=True,
            severities=(1, 3, 5),
        )
    )
    result = report.run.results[0]
    evaluated = evaluate_corruptions(model, str(folder), severities=(1, 3, 5), out_dir=tmp_path / "e")
    assert result.n_eval == evaluated.n_images == 16 and result.top1 == evaluated.clean_top1
    assert result.severities == [1, 3, 5] and list(result.corruptions) == list(list_corruptions())
    assert result.corruptions == evaluated.corruptions  # same frames, same seeds, same top-1
    assert result.mean_corruption_top1 == evaluated.mean_corruption_top1
    every = [value for values in result.corruptions.values() for value in values]
    assert min(every) < result.top1  # the corruptions cost this model something: equal figures are not trivial
    markdown = Path(report.markdown_path).read_text()
    assert "corrupted top-1" in markdown and "## Top-1 under camera corruptions" in markdown
    assert f"{100 * result.mean_corruption_top1:.2f}%" in markdown
    saved = json.loads(Path(report.json_path).read_text())
    assert saved["results"][0]["corruptions"] == result.corruptions
    assert saved["settings"]["corruption_seed"] == 0


def test_bench_corruptions_need_data_and_valid_severities(tmp_path, digits_run):
    from typer.testing import CliRunner

    from edgecls.cli import app

    with pytest.raises(ConfigError, match="--corruptions scores the --data"):
        bench(BenchConfig(models=(str(digits_run.tflite),), corruptions=True))
    result = CliRunner().invoke(app, ["bench", str(digits_run.tflite), "--corruptions", "--severities", "0-7"])
    assert result.exit_code == 2 and "severities must lie in 1..5" in result.output


# --- an INT8 artifact slower than its float sibling is flagged (fake engine: the latency is ours to set) ----------


def _tiny_artifact(path: Path, precision: str, source_digest: str) -> Path:
    """A tiny ONNX carrying edgecls metadata, as ``edgecls export`` / ``quantize`` write it."""
    import onnx

    from edgecls.runtime.metadata import METADATA_KEY, ModelInfo

    _tiny_onnx(path)
    model = onnx.load(str(path))
    info = ModelInfo(tuple(str(i) for i in range(10)), (8, 8), 1, "GRAY")
    info = info.with_provenance(precision=precision, source_digest=source_digest)
    model.metadata_props.add(key=METADATA_KEY, value=info.to_json())
    onnx.save(model, str(path))
    return path


@pytest.fixture
def engine_latency(monkeypatch):
    """``.onnx`` files run on a fake engine that takes the milliseconds its file name's entry says (each model
    measured in this process, where the fake is, instead of a fresh one)."""
    import time

    from edgecls.runtime import engines, measure
    from edgecls.runtime.engines import Engine, TensorSpec

    latency_ms: dict[str, float] = {}

    class FakeEngine(Engine):
        def __init__(self, path, *, threads=None, providers=(), kernels="default"):
            super().__init__()
            self.name, self.version, self.provider, self.threads = "fake", "0", "CPU", threads or 1
            self.input = TensorSpec("pixels", (1, 8, 8, 1), np.dtype(np.float32))
            self.output = TensorSpec("scores", (1, 10), np.dtype(np.float32))
            self._sleep_s = latency_ms[Path(path).name] / 1000

        def _run(self, batch):
            time.sleep(self._sleep_s)
            return np.zeros((batch.shape[0], 10), np.float32)

    monkeypatch.setitem(engines.ENGINES, ".onnx", FakeEngine)
    monkeypatch.setattr(measure, "_measure_in_subprocess", measure.measure_model)
    return latency_ms


def test_bench_flags_an_int8_artifact_slower_than_its_float_sibling(tmp_path, engine_latency):
    from typer.testing import CliRunner

    from edgecls.cli import app

    int8 = _tiny_artifact(tmp_path / "m_int8.onnx", "int8", "aaaa")
    fp32 = _tiny_artifact(tmp_path / "m_fp32.onnx", "fp32", "aaaa")
    other = _tiny_artifact(tmp_path / "other_fp32.onnx", "fp32", "bbbb")  # another model: faster, not a sibling
    engine_latency.update({"m_int8.onnx": 6.0, "m_fp32.onnx": 2.0, "other_fp32.onnx": 0.5})
    out = tmp_path / "bench"
    arguments = ["bench", str(int8), str(fp32), str(other), "--runs", "15", "--warmup", "1", "--threads", "1"]
    result = CliRunner().invoke(app, [*arguments, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "INT8 slower than its float sibling m_fp32.onnx" in " ".join(result.output.split()), result.output
    markdown = (out / "bench.md").read_text()
    int8_row = next(line for line in markdown.splitlines() if line.startswith("| m_int8.onnx"))
    assert "INT8 slower than its float sibling m_fp32.onnx here (6." in int8_row
    assert "deploy the float one on this target" in int8_row
    assert "sibling" not in next(line for line in markdown.splitlines() if line.startswith("| m_fp32.onnx"))
    saved = {Path(r["model"]).name: r["notes"] for r in json.loads((out / "bench.json").read_text())["results"]}
    assert any("INT8 slower than its float sibling m_fp32.onnx" in note for note in saved["m_int8.onnx"])
    assert not any("sibling" in note for note in saved["m_fp32.onnx"] + saved["other_fp32.onnx"])

    engine_latency.update({"m_int8.onnx": 1.0})  # INT8 faster than its sibling: nothing to say
    result = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "again")])
    assert result.exit_code == 0 and "sibling" not in result.output
