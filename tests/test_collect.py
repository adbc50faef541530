"""The collector: which frames it keeps, its bounds on disk and in time, under threads, and whole files only."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecls.base.errors import ConfigError
from edgecls.runtime import Classifier
from edgecls.runtime.collect import Collector

LABELS = ("blue", "green", "red")
UNSURE = [0.4, 0.35, 0.25]  # top score under 0.6
CLOSE = [0.30, 0.36, 0.34]  # over a threshold of 0.3, but the top two are 0.02 apart
SURE = [0.9, 0.06, 0.04]


def frame(value: int = 90) -> np.ndarray:
    return np.full((24, 32, 3), value, np.uint8)


def pairs(folder: Path) -> tuple[list[str], list[str]]:
    images = sorted(p.stem for p in folder.iterdir() if p.suffix in (".png", ".jpg") and not p.name.startswith("."))
    sidecars = sorted(p.stem for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    return images, sidecars


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_keeps_unsure_frames_with_their_sidecar(tmp_path):
    collector = Collector(tmp_path / "kept", below=0.6, margin=0.1, every_s=0)
    assert collector.consider(frame(), LABELS, SURE) is None
    low = collector.consider(frame(), LABELS, UNSURE, model="m.tflite", model_sha256="ab" * 32)
    assert low is not None and collector.seen == 2 and collector.saved == 1
    np.testing.assert_array_equal(cv2.imread(str(low)), frame())  # the frame as given, lossless
    sidecar = json.loads(low.with_suffix(".json").read_text())
    assert sidecar["prediction"] == "blue" and sidecar["reason"] == "low score"
    assert sidecar["score"] == pytest.approx(0.4) and sidecar["margin"] == pytest.approx(0.05)
    assert sidecar["scores"] == {"blue": 0.4, "green": 0.35, "red": 0.25}
    assert sidecar["model"] == "m.tflite" and sidecar["model_sha256"] == "ab" * 32
    assert sidecar["frame_shape"] == [24, 32, 3] and sidecar["image"] == low.name
    assert sidecar["time"].endswith("+00:00") and sidecar["thresholds"] == {"below": 0.6, "margin": 0.1}
    # below 0.6 a softmax's top two are at least 0.2 apart; with a lower threshold the margin decides
    by_margin = Collector(tmp_path / "margin", below=0.3, margin=0.1, every_s=0)
    assert by_margin.consider(frame(), LABELS, SURE) is None
    close = by_margin.consider(frame(), LABELS, CLOSE)
    assert close is not None and json.loads(close.with_suffix(".json").read_text())["reason"] == "small margin"


def test_disk_cap_drops_the_oldest(tmp_path):
    collector = Collector(tmp_path, max_files=5, every_s=0)
    saved = [collector.consider(frame(i), LABELS, UNSURE) for i in range(12)]
    images, sidecars = pairs(tmp_path)
    assert images == sidecars == [path.stem for path in saved[-5:]]
    # a collector started later on the same folder counts what is there
    again = Collector(tmp_path, max_files=5, every_s=0)
    newest = again.consider(frame(200), LABELS, UNSURE)
    images, _ = pairs(tmp_path)
    assert len(images) == 5 and images[-1] == newest.stem and saved[-5].stem not in images


def test_rate_limit(tmp_path):
    clock = Clock()
    collector = Collector(tmp_path, every_s=1.0, clock=clock)
    kept = []
    for now in (0.0, 0.5, 0.99, 1.0, 1.5, 2.2, 2.3):
        clock.now = now
        kept.append(collector.consider(frame(), LABELS, UNSURE) is not None)
    assert kept == [True, False, False, True, False, True, False]
    clock.now = 10.0  # a sure frame neither is kept nor resets the clock
    assert collector.consider(frame(), LABELS, SURE) is None
    assert collector.consider(frame(), LABELS, UNSURE) is not None


def test_four_threads_share_one_collector(tmp_path):
    collector = Collector(tmp_path, max_files=30, every_s=0, image_format=".jpg")
    start = threading.Barrier(4)
    errors = []

    def work(worker: int) -> None:
        start.wait()
        try:
            for i in range(50):
                collector.consider(frame(worker * 50 + i), LABELS, UNSURE)
        except Exception as exc:  # noqa: BLE001 - the test reports any failure of a thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert collector.seen == 200 and collector.saved == 200
    images, sidecars = pairs(tmp_path)
    assert images == sidecars and len(images) == 30 and len(set(images)) == 30
    assert no_temporaries(tmp_path)
    for stem in images:  # every file whole
        assert cv2.imread(str(tmp_path / f"{stem}.jpg")) is not None
        assert json.loads((tmp_path / f"{stem}.json").read_text())["image"] == f"{stem}.jpg"


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    collector = Collector(tmp_path, every_s=0)

    def half_written(path, image, *args):
        Path(path).write_bytes(b"\x89PNG\r\n\x1a\n half")  # a crash mid-write
        raise OSError("disk full")

    monkeypatch.setattr(cv2, "imwrite", half_written)
    with pytest.raises(OSError, match="disk full"):
        collector.consider(frame(), LABELS, UNSURE)
    assert list(tmp_path.iterdir()) == []


def test_bad_settings_are_refused(tmp_path):
    for settings, message in (
        ({"below": 1.5}, "scores in 0..1"),
        ({"max_files": 0}, "max_files"),
        ({"every_s": -1}, "every_s"),
        ({"image_format": ".gif"}, "image_format"),
    ):
        with pytest.raises(ConfigError, match=message):
            Collector(tmp_path, **settings)


def _mean_color_onnx(path: Path) -> Path:
    """A tiny classifier: softmax of each channel's mean pixel / 20 (RGB order: blue, green, red is 2, 1, 0)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMean", ["image"], ["means"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["means", "k"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "means",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 8, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor("k", TensorProto.FLOAT, [], [0.05])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_classifier_collects_what_it_was_unsure_about(tmp_path):
    pytest.importorskip("onnxruntime")
    model = _mean_color_onnx(tmp_path / "means.onnx")
    plain = Classifier(model, top_k=1)
    collecting = Classifier(model, top_k=1, collect=Collector(tmp_path / "kept", every_s=0))
    sure = np.zeros((30, 40, 3), np.uint8)
    sure[:, :, 2] = 250  # BGR red: the red channel's logit is 12.5 above the others
    gray = np.full((30, 40, 3), 120, np.uint8)  # every class 1/3
    for image in (sure, gray):
        assert collecting.predict(image) == plain.predict(image)  # collecting changes no answer
    assert collecting.predict_batch([gray, sure]) == plain.predict_batch([gray, sure])
    images, sidecars = pairs(tmp_path / "kept")
    assert len(images) == len(sidecars) == 2  # the gray frame, once per call
    sidecar = json.loads((tmp_path / "kept" / f"{sidecars[0]}.json").read_text())
    assert sidecar["model"] == "means.onnx"
    assert sidecar["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert sidecar["score"] == pytest.approx(1 / 3, abs=1e-4) and sidecar["frame_shape"] == [30, 40, 3]
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "kept" / f"{images[0]}.png")), gray)


def test_camera_example_collects(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("onnxruntime")
    model = _mean_color_onnx(tmp_path / "means.onnx")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15, (64, 48))
    assert writer.isOpened()
    for index in range(6):  # gray frames (unsure) and red ones (sure), in turn
        writer.write(np.full((48, 64, 3), (120, 120, 120) if index % 2 == 0 else (0, 0, 250), np.uint8))
    writer.release()
    script = Path(__file__).resolve().parents[1] / "examples" / "camera.py"
    command = [
        sys.executable,
        str(script),
        str(video),
        "--model",
        str(model),
        "--headless",
        "--collect",
        str(tmp_path / "kept"),
        "--every",
        "0",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "collected 3 of 6 frames" in completed.stderr
    images, sidecars = pairs(tmp_path / "kept")
    assert len(images) == len(sidecars) == 3
