"""Shared fixtures: one trained digits model for the whole session and its quantized TFLite files (their users are
slow tests), small image folders."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# pytest-xdist gives its workers COLUMNS=80 (the controller's terminal width); the CLI under test reads COLUMNS to
# size its tables, and a serial run (CI: piped, no COLUMNS) sees none. Every worker sees what a serial run sees.
os.environ.pop("COLUMNS", None)


@dataclass
class DigitsRun:
    run_dir: Path
    model_path: Path  # model.keras
    tflite: Path  # FP32
    onnx: Path  # FP32
    val_accuracy: float
    train_result: object
    export_result: object


def pytest_collection_modifyitems(items) -> None:
    """A test that needs ``digits_run`` is slow: the fast lane (``-m "not slow"``) never trains that model.

    The fixture trains for 8 epochs and converts to TFLite and ONNX (15-40 s on two cores), which would be
    most of ``make test-fast``'s time for a few fast tests; they run in ``make test`` with the rest.
    """
    for item in items:
        if "digits_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    # The Pi OS box tests run last: their boxes build in the background meanwhile (pytest_collection_finish).
    items.sort(key=lambda item: item.path.name == BOX_TESTS)


BOX_TESTS = "test_box.py"


def pytest_collection_finish(session) -> None:
    """Start building the Pi OS boxes the box tests need (tests/box/build.py) while the other tests run."""
    if any(item.path.name == BOX_TESTS for item in session.items):
        from box.build import start_background_build

        session.config.stash[BOX_BUILDER] = start_background_build()


def pytest_sessionfinish(session) -> None:
    """A background box build still running when the session ends (interrupted, or the box tests deselected) stops."""
    builder = session.config.stash.get(BOX_BUILDER, None)
    if builder is not None and builder.poll() is None:
        os.killpg(builder.pid, signal.SIGTERM)
        builder.wait()


BOX_BUILDER = pytest.StashKey()


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> DigitsRun:
    """The default cnn trained on digits (8 epochs, seed 0) and exported to FP32 TFLite + ONNX."""
    from edgecls.export import export
    from edgecls.train import TrainConfig, train

    run_dir = tmp_path_factory.mktemp("digits-run")
    result = train(TrainConfig(data="digits", model="cnn", epochs=8, patience=0, out=str(run_dir), seed=0))
    exported = export(result.model_path)
    paths = {a.format: Path(a.path) for a in exported.artifacts}
    return DigitsRun(
        run_dir, Path(result.model_path), paths["tflite"], paths["onnx"], result.val_accuracy, result, exported
    )


@dataclass
class DigitsQuantized:
    fp16: Path  # FP16-weight TFLite, float I/O
    int8: Path  # full-integer INT8 TFLite (int8 I/O)

    def tflite_files(self, digits_run: DigitsRun) -> list[Path]:
        """Every TFLite kind edgecls writes of one model: FP32 (exported), FP16, INT8."""
        return [digits_run.tflite, self.fp16, self.int8]


CALIB_DIGITS = Path(__file__).resolve().parents[1] / "calib_data" / "digits"  # 300 digits of the training split


@pytest.fixture(scope="session")
def digits_quantized(digits_run, tmp_path_factory) -> DigitsQuantized:
    """FP16 and INT8 TFLite of ``digits_run``'s model, as ``edgecls quantize`` writes them, made once a session.

    INT8 calibrates on 100 of the 300 digits in calib_data/digits (training images): what the runtime's
    compatibility, the TFLite reader and the device install need is an integer-only graph, not a tuned one.
    """
    from edgecls.quantize import QuantizeConfig, quantize

    out = tmp_path_factory.mktemp("digits-quantized")
    fp16 = quantize(digits_run.model_path, QuantizeConfig(precision="fp16", out=str(out)))
    int8 = quantize(
        digits_run.model_path,
        QuantizeConfig(calib=str(CALIB_DIGITS), calib_size=100, formats=("tflite",), out=str(out)),
    )
    return DigitsQuantized(Path(fp16.artifacts[0].path), Path(int8.artifacts[0].path))


def write_png(path: Path, image: np.ndarray) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def write_pipeline(path: Path, data: Path, *, epochs: int = 2, export_formats='["tflite"]', extra: str = "") -> Path:
    """A pipeline file: ``cnn`` at 16 px on ``data``, exported to ``export_formats``, then ``extra`` (more tables)."""
    path.write_text(
        f"""
name = "shapes"
data = "{data}"
seed = 0

[train]
model = "cnn"
img_size = 16
epochs = {epochs}
batch_size = 8
patience = 0

[export]
formats = {export_formats}
{extra}
"""
    )
    return path


@pytest.fixture
def shapes_folder(tmp_path) -> Path:
    """Two easy classes (bright square vs dark square on noise), 16 PNGs each, 40x40 BGR."""
    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    for label, level in (("bright", 220), ("dark", 30)):
        for i in range(16):
            image = rng.integers(90, 160, size=(40, 40, 3), dtype=np.uint8)
            image[10:30, 10:30] = level
            write_png(root / label / f"{i:02d}.png", image)
    return root


@pytest.fixture
def no_network(monkeypatch):
    """Any connect to a non-loopback address fails the test."""
    attempts = []
    real_connect = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else None
        try:
            loopback = host is not None and ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback and self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"test: network connection to {address} refused")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def write_legacy_h5(model, path: Path) -> None:
    """A weights file in the layout Keras publishes (legacy HDF5, one group per layer)."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)


def channel_means_onnx(path: Path, size: tuple[int, int] = (32, 32)) -> Path:
    """A real ONNX classifier with no training: each class' score is the mean of one input channel, in the
    model's own RGB order (labels red, green, blue), so a red frame must come out ``red`` through
    ``Classifier.predict`` (no TensorFlow needed; onnx to write it, onnxruntime to run it)."""
    import onnx
    from onnx import TensorProto, helper

    from edgecls.runtime.metadata import METADATA_KEY, ModelInfo

    height, width = size
    node = helper.make_node("ReduceMean", ["image"], ["scores"], axes=[1, 2], keepdims=0)
    graph = helper.make_graph(
        [node],
        "channel_means",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, height, width, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    info = ModelInfo(("red", "green", "blue"), size, 3, "RGB", provenance={"source_model": "channel means"})
    helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
