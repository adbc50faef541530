"""The device runtime: no TensorFlow, thread safety, flat memory, the camera example."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgecls.runtime import Classifier

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "edgecls" / "runtime"
FORBIDDEN = ("tensorflow", "keras", "tf_keras", "tf2onnx")
NOT_ON_A_DEVICE = (*FORBIDDEN, "onnx", "sklearn", "matplotlib", "rich", "typer")


@pytest.mark.parametrize("path", sorted(RUNTIME.glob("*.py")), ids=lambda p: p.name)
def test_no_runtime_module_imports_tensorflow_even_lazily(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            imported |= {
                arg.value.split(".")[0]
                for arg in node.args
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            }
    assert not imported & set(FORBIDDEN), f"{path.name} imports {sorted(imported & set(FORBIDDEN))}"
    assert "edgecls" not in imported or all(
        module.startswith(("edgecls.runtime", "edgecls.base.errors", "edgecls.base.fileio"))
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgecls")
        for module in [node.module]
    ), f"{path.name} reaches outside the runtime"


def _python(code: str, *, timeout: int = 300) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_a_fresh_interpreter_predicts_and_benchmarks_without_tensorflow(digits_run):
    code = f"""
import json, sys
import numpy as np
import edgecls.runtime
from edgecls.runtime import Classifier
from edgecls.runtime.measure import measure_model
import edgecls.runtime.remote, edgecls.runtime.device, edgecls.runtime.targets
frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
labels = [Classifier(path).predict(frame)[0][0] for path in ({str(digits_run.tflite)!r}, {str(digits_run.onnx)!r})]
measured = measure_model({str(digits_run.onnx)!r}, threads=1, runs=3, warmup=1)
loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({NOT_ON_A_DEVICE!r}))
print(json.dumps({{"labels": labels, "loaded": loaded, "engine": measured.engine}}))
"""
    result = _python(code)
    assert result["loaded"] == [], f"the runtime pulled in {result['loaded']}"
    assert len(result["labels"]) == 2 and result["engine"] == "onnxruntime"


@pytest.mark.parametrize("shared", [True, False], ids=["one shared Classifier", "one Classifier per thread"])
def test_threads_get_the_same_answers_as_one_thread(digits_run, shared):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (120 + 7 * i, 160, 3), dtype=np.uint8) for i in range(24)]
    reference = Classifier(digits_run.tflite, threads=1)
    expected = [reference.predict(frame) for frame in frames]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            classifier = reference if shared else Classifier(digits_run.tflite, threads=1)
            results[worker] = [classifier.predict(frame) for frame in frames * 5]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for worker in range(4):
        assert [[label for label, _ in p] for p in results[worker]] == [[label for label, _ in p] for p in expected * 5]
        np.testing.assert_allclose(
            [[s for _, s in p] for p in results[worker]], [[s for _, s in p] for p in expected * 5], atol=1e-6
        )


def test_memory_stays_flat_over_many_predictions(digits_run):
    code = f"""
import json, psutil
import numpy as np
from edgecls.runtime import Classifier
classifier = Classifier({str(digits_run.tflite)!r}, threads=1)
frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
for _ in range(300):
    classifier.predict(frame)
process = psutil.Process()
before = process.memory_info().rss
for _ in range(3000):
    classifier.predict(frame)
print(json.dumps({{"growth_mb": (process.memory_info().rss - before) / 2**20}}))
"""
    assert _python(code)["growth_mb"] <= 2.0


def test_camera_example_on_a_video_file(digits_run, tmp_path):
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15, (640, 480))
    assert writer.isOpened()
    for index in range(12):
        frame = np.full((480, 640, 3), 20, np.uint8)
        cv2.putText(frame, str(index % 10), (250, 380), cv2.FONT_HERSHEY_SIMPLEX, 12, (255, 255, 255), 30)
        writer.write(frame)
    writer.release()
    command = [
        sys.executable,
        str(ROOT / "examples" / "camera.py"),
        str(video),
        "--model",
        str(digits_run.tflite),
        "--headless",
        "--threads",
        "1",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 12
    for number, line in enumerate(lines, start=1):
        prefix, rest = line.split(": ", 1)
        label, score, fps = rest.split(" ", 2)
        assert (
            prefix == f"frame {number}"
            and label in [str(d) for d in range(10)]
            and 0.0 <= float(score) <= 1.0
            and fps.endswith("fps)")
        )
    assert "12 frames" in completed.stderr and "Classifier(" in completed.stderr
    limited = subprocess.run([*command, "--max-frames", "5"], capture_output=True, text=True, timeout=120, check=True)
    assert len(limited.stdout.strip().splitlines()) == 5


def test_camera_example_draws_the_label():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import camera
    finally:
        sys.path.remove(str(ROOT / "examples"))
    frame = np.zeros((480, 640, 3), np.uint8)
    camera.annotate(frame, "cat", 0.93, 29.7)
    assert frame[:30, :200].any() and not frame[100:].any()


@pytest.mark.parametrize("classes", [10, 1000])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.float32])
def test_best_indices_match_a_stable_sort_for_short_and_long_rows(classes, dtype):
    from edgecls.runtime.model import best_indices

    rng = np.random.default_rng(classes)
    row = rng.integers(0, 20, classes).astype(dtype)  # few distinct values: many ties
    best, values = best_indices(row, 5)
    expected = sorted(range(classes), key=lambda i: (-float(row[i]), i))[:5]
    assert best == expected
    assert values == row.tolist() or np.allclose(values, row.astype(np.float64))
    assert best_indices(row, classes + 3)[0] == sorted(range(classes), key=lambda i: (-float(row[i]), i))


def test_resize_of_a_camera_frame_anti_aliases_close_to_the_area_filter():
    """640x480 -> 96x96 (the supersampling path, reading alternate rows): near INTER_AREA, far from plain bilinear."""
    import cv2

    from edgecls.runtime.preprocess import resize

    y, x = np.mgrid[0:480, 0:640].astype(np.float64)
    zone_plate = (127.5 + 127.5 * np.cos(((x - 320) ** 2 + (y - 240) ** 2) * np.pi / 900)).astype(np.uint8)
    frame = cv2.merge([zone_plate] * 3)
    area = cv2.resize(frame, (96, 96), interpolation=cv2.INTER_AREA).astype(int)
    ours = resize(frame, 96, 96)
    bilinear = cv2.resize(frame, (96, 96), interpolation=cv2.INTER_LINEAR).astype(int)
    assert ours.shape == (96, 96, 3) and ours.dtype == np.uint8
    ours_error, bilinear_error = np.abs(ours.astype(int) - area).mean(), np.abs(bilinear - area).mean()
    assert ours_error < 20 and bilinear_error > 3 * ours_error, (ours_error, bilinear_error)
    flat = np.full((480, 640, 3), 77, np.uint8)  # a flat frame stays exactly flat
    assert np.all(resize(flat, 96, 96) == 77)


def _onnx_model(path: Path, input_shape: list, *, channels_axis: int = 3) -> Path:
    """A tiny classifier graph: the mean of each channel is its score (no TensorFlow needed)."""
    import onnx
    from onnx import TensorProto, helper

    axes = [1, 2] if channels_axis == 3 else [2, 3]
    node = helper.make_node("ReduceMean", ["image"], ["scores"], axes=axes, keepdims=0)
    classes = input_shape[channels_axis]
    graph = helper.make_graph(
        [node],
        "means",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [input_shape[0], classes])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_frames_other_than_uint8(digits_run):
    frame = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    for path in (digits_run.tflite, digits_run.onnx):
        classifier = Classifier(path)
        assert classifier.predict(frame.astype(np.uint16) * 257) == classifier.predict(
            frame
        )  # 16-bit: scaled, not wrapped
        with pytest.raises(ValueError, match="uint8 pixels 0..255"):
            classifier.predict(frame.astype(np.float32) / 255)


def test_top_k_bounds(digits_run):
    frame = np.zeros((32, 32, 3), np.uint8)
    classifier = Classifier(digits_run.tflite)
    assert len(classifier.predict(frame, top_k=50)) == 10 and len(classifier.predict(frame, top_k=1)) == 1
    for bad in (0, -1):
        with pytest.raises(ValueError, match="top_k must be 1 or more"):
            classifier.predict(frame, top_k=bad)
    with pytest.raises(ValueError, match="top_k must be 1 or more"):
        Classifier(digits_run.tflite, top_k=0)


def test_onnx_models_from_elsewhere(tmp_path):
    from edgecls.base.errors import ModelError

    frames = [np.full((30, 40, 3), value, np.uint8) for value in ((10, 20, 200), (200, 20, 10), (20, 200, 10))]
    fixed = Classifier(_onnx_model(tmp_path / "fixed.onnx", [1, 8, 8, 3]))  # exported for batch 1 only
    assert [fixed.predict(frame)[0][0] for frame in frames] == ["0", "2", "1"]  # RGB means: blue, red, green frames
    assert fixed.predict_batch(frames) == [fixed.predict(frame) for frame in frames]
    with pytest.raises(ModelError, match="dynamic beyond the batch"):
        Classifier(_onnx_model(tmp_path / "dynamic.onnx", ["batch", "height", "width", 3]))
    with pytest.raises(ModelError, match=r"\(1, 3, 8, 8\) \(channels first"):
        Classifier(_onnx_model(tmp_path / "nchw.onnx", [1, 3, 8, 8], channels_axis=1))
