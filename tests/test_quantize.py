"""INT8 quantization: calibration folders, integer-only graphs, the uint8 camera contract,
the accuracy budget on a model with an outlier layer, and the CLI."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png
from typer.testing import CliRunner

from edgecls.base.errors import DataError
from edgecls.cli import app
from edgecls.quantize import QuantizeConfig, quantize
from edgecls.quantize.calibration import load_calibration, stratified_sample
from edgecls.runtime.metadata import ModelInfo, read_model_info

REPO = Path(__file__).resolve().parents[1]
CALIB_DIGITS = REPO / "calib_data" / "digits"
SIZE = 16  # the small models here take 16x16 gray digits
runner = CliRunner()


def digits_info(size: int = SIZE) -> ModelInfo:
    return ModelInfo(
        labels=tuple(str(d) for d in range(10)),
        input_size=(size, size),
        channels=1,
        channel_order="GRAY",
        provenance={"dataset": "digits", "split": {"mode": "stratified", "seed": 0, "val_split": 0.2}},
    )


# --- models built here: a small dense classifier, and the same with an outlier layer ------


@pytest.fixture(scope="module")
def dense_models(tmp_path_factory):
    """A small dense digits classifier and a copy with one outlier channel added.

    ``outlier`` computes exactly what ``hidden`` does plus one extra ReLU
    channel that reaches ~5000 on every image; the next layer gives it weight
    0, so the float model is unchanged. INT8 spreads 256 levels over 0..5000
    for that tensor (one step ≈ 20): every real channel (0..5) rounds to 0.
    """
    import keras

    from edgecls.adapters.keras_io import save_keras_model
    from edgecls.data import load_dataset

    root = tmp_path_factory.mktemp("dense")
    dataset = load_dataset("digits", image_size=(SIZE, SIZE))
    keras.utils.set_random_seed(0)

    def build(hidden_name: str, width: int):
        inputs = keras.Input((SIZE, SIZE, 1), name="pixels")
        x = keras.layers.Rescaling(1 / 255.0, name="normalize")(inputs)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(width, activation="relu", name=hidden_name)(x)
        logits = keras.layers.Dense(10, name="logits")(x)
        return keras.Model(inputs, keras.layers.Activation("softmax", name="probs")(logits))

    plain = build("hidden", 32)
    plain.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    plain.fit(dataset.train.images.astype("float32"), dataset.train.labels, epochs=15, batch_size=64, verbose=0)
    outlier = build("outlier", 33)
    weights, bias = plain.get_layer("hidden").get_weights()
    outlier.get_layer("outlier").set_weights(
        [
            np.concatenate([weights, np.full((weights.shape[0], 1), 50.0, np.float32)], 1),
            np.append(bias, 0.0).astype(np.float32),
        ]
    )
    head, head_bias = plain.get_layer("logits").get_weights()
    outlier.get_layer("logits").set_weights([np.concatenate([head, np.zeros((1, 10), np.float32)], 0), head_bias])
    paths = {
        name: save_keras_model(model, root / f"{name}.keras", digits_info())
        for name, model in (("plain", plain), ("outlier", outlier))
    }
    return paths


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory) -> Path:
    """A 16x16 gray digits classifier as saved before training: what a command refuses before converting needs no
    trained weights (the fast lane trains nothing)."""
    import keras

    from edgecls.adapters.keras_io import save_keras_model

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 1), name="pixels")
    x = keras.layers.Flatten(name="flatten")(keras.layers.Rescaling(1 / 255.0, name="normalize")(inputs))
    logits = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="probs")(logits))
    return save_keras_model(model, tmp_path_factory.mktemp("untrained") / "untrained.keras", digits_info())


# --- calibration folders ----------------------------------------------------------------


def test_stratified_sample_is_proportional_and_seeded():
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    chosen = stratified_sample(labels, 20, seed=3)
    assert len(chosen) == 20 and len(set(chosen.tolist())) == 20
    assert np.bincount(labels[chosen], minlength=4).tolist() == [10, 6, 3, 1]
    assert np.array_equal(chosen, stratified_sample(labels, 20, seed=3))
    assert not np.array_equal(chosen, stratified_sample(labels, 20, seed=4))
    assert np.array_equal(stratified_sample(labels, 500, seed=0), np.arange(100))


def test_calibration_matches_the_model_contract_and_warns(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        for i in range(6):
            write_png(tmp_path / "calib" / label / f"{i}.png", rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
    info = ModelInfo(labels=("cat", "dog", "fox"), input_size=(24, 20), channels=3, channel_order="RGB")
    calibration = load_calibration(tmp_path / "calib", info, size=8, seed=1)
    assert len(calibration) == 8 and calibration.per_class_counts() == {"cat": 4, "dog": 4}
    batches = list(calibration)  # the plain iterable both converters read
    assert len(batches) == 8 and batches[0].shape == (1, 24, 20, 3) and batches[0].dtype == np.uint8
    assert [b.shape[0] for b in calibration.batches(3)] == [3, 3, 2]
    text = " ".join(calibration.warnings)
    assert "only 8 calibration images (of 12 available)" in text
    assert "1 of the model's 3 classes have no calibration images: fox" in text
    manifest = calibration.manifest()
    assert manifest["n_images"] == 8 and len({f["sha256"] for f in manifest["files"]}) == 8
    assert all(f["file"].startswith(("cat/", "dog/")) for f in manifest["files"])


def test_calibration_errors(tmp_path):
    info = digits_info()
    with pytest.raises(DataError, match="no such calibration folder"):
        load_calibration(tmp_path / "missing", info)
    (tmp_path / "empty" / "0").mkdir(parents=True)
    (tmp_path / "empty" / "0" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no decodable images"):
        load_calibration(tmp_path / "empty", info)
    four_channels = ModelInfo(labels=("a", "b"), input_size=(16, 16), channels=4, channel_order="RGB")
    with pytest.raises(DataError, match="takes 4 channel"):
        load_calibration(CALIB_DIGITS, four_channels)


def test_repository_digits_calibration_set_holds_only_training_images():
    from edgecls.data import load_dataset

    files = sorted(CALIB_DIGITS.glob("*/*.png"))
    assert 200 <= len(files) <= 500 and len({f.parent.name for f in files}) == 10
    indices = {int(re.fullmatch(r"digits_(\d+)\.png", f.name).group(1)) for f in files}
    dataset = load_dataset("digits", image_size=(8, 8))  # the split `edgecls train` makes (val 0.2, seed 0)
    validation = {int(source.split("#")[1]) for source in dataset.val.sources}
    assert not indices & validation
    # the PNGs hold the training pixels exactly: 8x8 digits, lossless
    by_index = dict(zip((int(s.split("#")[1]) for s in dataset.train.sources), dataset.train.images))
    sample = files[0]
    import cv2

    assert np.array_equal(
        cv2.imread(str(sample), cv2.IMREAD_UNCHANGED), by_index[int(sample.stem.split("_")[1])][:, :, 0]
    )


# --- TFLite graph structure and the uint8 contract --------------------------------------


def test_int8_tflite_graph_is_integer_only(digits_run, tmp_path):
    from edgecls.adapters import tflite_graph
    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.quantize import tflite

    info = read_model_info(digits_run.model_path)
    calibration = load_calibration(CALIB_DIGITS, info, size=100)
    model = load_keras_model(digits_run.model_path)
    model_bytes = tflite.convert_int8(model, calibration)  # the default: --io int8
    ops = tflite_graph.op_types(model_bytes)
    names = [op for op, _, _ in ops]
    assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(names)
    assert "CUSTOM" not in names and "DEQUANTIZE" not in names and "QUANTIZE" not in names
    assert tflite_graph.float_ops(model_bytes) == []
    tensor_types = {kind for _, inputs, outputs in ops for kind in inputs + outputs}
    assert tensor_types <= {"INT8", "INT32"}, tensor_types
    assert tflite_graph.io_quantization(model_bytes)["input"] == {"dtype": "int8", "scale": 1.0, "zero_point": -128}
    # the runtime feeds it pixel - 128, and predict's top-k (dequantising only k) equals the whole row's scores
    from edgecls.runtime import Classifier

    path = tmp_path / "int8.tflite"
    path.write_bytes(model_bytes)
    classifier = Classifier(path, threads=1, top_k=4)
    pixels = np.random.default_rng(0).integers(0, 256, (2, *classifier.engine.input.shape[1:]), dtype=np.uint8)
    assert np.array_equal(classifier.to_input(pixels), (pixels.astype(np.int16) - 128).astype(np.int8))
    frame = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    scores = classifier.scores(classifier.preprocess(frame))[0]
    predicted = classifier.predict(frame)
    assert [label for label, _ in predicted] == [classifier.labels[i] for i in np.argsort(-scores, kind="stable")[:4]]
    assert np.allclose([score for _, score in predicted], np.sort(scores)[::-1][:4], atol=1e-6)


@pytest.mark.slow
def test_uint8_io_takes_camera_bytes_without_float_math(digits_run, tmp_path):
    from edgecls.evaluate import validation_set
    from edgecls.runtime import Classifier

    result = quantize(
        digits_run.model_path,
        QuantizeConfig(calib=str(CALIB_DIGITS), calib_size=150, io="uint8", eval_data="digits", out=str(tmp_path)),
    )
    by_format = {a.format: a for a in result.artifacts}
    tflite_artifact, onnx_artifact = by_format["tflite"], by_format["onnx"]
    assert tflite_artifact.float_ops == 0 and tflite_artifact.float_layers == []
    assert tflite_artifact.input == {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
    classifier = Classifier(tflite_artifact.path)
    spec = classifier.engine.input
    assert spec.dtype == np.uint8 and spec.scale == 1.0 and spec.zero_point == 0
    images, _ = validation_set(classifier.info, "digits")
    pixels = np.ascontiguousarray(images.images[:32])
    fed = classifier.to_input(pixels)
    assert fed is pixels or np.shares_memory(fed, pixels)  # the bytes themselves: no copy, no float
    assert np.mean(classifier.scores(pixels).argmax(1) == images.labels[:32]) >= 0.9
    # both artifacts measured against float on held-out images, metadata inside
    for artifact in (tflite_artifact, onnx_artifact):
        assert artifact.precision == "int8" and artifact.size_ratio < 0.4
        assert artifact.agreement >= 0.95 and artifact.drop <= 3.0
        provenance = read_model_info(artifact.path).provenance
        assert provenance["precision"] == "int8" and provenance["top1"] == pytest.approx(artifact.top1)
        assert provenance["calibration"]["manifest_sha256"] == result.calibration["manifest_sha256"]
        assert len(artifact.worst_layers) == 5
    manifest = json.loads(Path(result.calibration["manifest"]).read_text())
    assert manifest["n_images"] == 150 and manifest["sha256"] == result.calibration["manifest_sha256"]
    report = json.loads(Path(result.report_json).read_text())
    assert set(report["artifacts"][0]) >= {
        "path",
        "format",
        "precision",
        "size_bytes",
        "size_ratio",
        "top1",
        "agreement",
        "float_layers",
    }
    assert "float_top1" in report and Path(result.report_markdown).read_text().startswith("# Quantization")


@pytest.mark.slow  # converts
def test_uint8_input_is_pinned_to_bytes_when_calibration_misses_0_and_255(dense_models, tmp_path):
    from edgecls.adapters import tflite_graph
    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.quantize import tflite
    from edgecls.runtime.engines import load_engine

    info = digits_info()
    calibration = load_calibration(CALIB_DIGITS, info, size=60)
    calibration.images = np.clip(calibration.images, 20, 230)  # a low-contrast calibration set
    calibrated = tflite.calibrate(load_keras_model(dense_models["plain"]), calibration)
    raw = tflite.requantize(calibrated, io="uint8")
    assert tflite_graph.io_quantization(raw)["input"]["scale"] != pytest.approx(1.0)
    pinned = tflite.pin_uint8_input(raw)
    assert tflite_graph.io_quantization(pinned)["input"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
    pixels = np.clip(load_calibration(CALIB_DIGITS, info, size=40, seed=5).images, 20, 230)
    outputs = []
    for model_bytes in (raw, pinned):
        path = tmp_path / f"m{len(outputs)}.tflite"
        path.write_bytes(model_bytes)
        engine = load_engine(path)
        scale, zero_point = engine.input.scale, engine.input.zero_point
        outputs.append(engine.run(np.clip(np.round(pixels / scale) + zero_point, 0, 255).astype(np.uint8)))
    assert np.mean(outputs[0].argmax(1) == outputs[1].argmax(1)) >= 0.97  # same function, one rounding fewer


@pytest.mark.slow  # converts
def test_info_and_the_quantize_report_count_the_same_float_ops(dense_models, tmp_path):
    """`edgecls info` and the quantize report classify every op of the same file alike (one definition)."""
    from edgecls.evaluate.info import inspect_artifact

    int8_config = QuantizeConfig(
        calib=str(CALIB_DIGITS), calib_size=60, formats=("tflite",), io="float", out=str(tmp_path)
    )
    int8 = quantize(dense_models["plain"], int8_config)
    fp16 = quantize(dense_models["plain"], QuantizeConfig(precision="fp16", out=str(tmp_path)))
    for result in (int8, fp16):
        (artifact,) = result.artifacts
        info = inspect_artifact(artifact.path)
        assert artifact.float_ops == len(info.float_ops), (artifact.precision, info.float_ops)
        assert artifact.integer_ops == info.integer_ops, artifact.precision
        assert info.integer_ops + len(info.float_ops) <= sum(info.op_counts.values())  # never both
    # INT8 with float I/O: float math only in the QUANTIZE at the input and the DEQUANTIZE at the output
    info = inspect_artifact(int8.artifacts[0].path)
    assert sorted(op.split()[0] for op in info.float_ops) == ["DEQUANTIZE", "QUANTIZE"]
    assert info.integer_ops >= 4 and info.op_counts["FULLY_CONNECTED"] == 2  # at least RESHAPE, 2 FC, SOFTMAX
    # FP16 weights, float32 compute: no op computes in integers (shape arithmetic on INT32 is neither)
    info = inspect_artifact(fp16.artifacts[0].path)
    assert info.integer_ops == 0 and len(info.float_ops) >= 5


# --- the accuracy budget ------------------------------------------------------------------


@pytest.mark.slow  # converts
def test_budget_keeps_the_outlier_layer_in_float(dense_models, tmp_path):
    from edgecls.adapters import tflite_graph

    result = runner.invoke(
        app,
        [
            "quantize",
            str(dense_models["outlier"]),
            "--int8",
            "--calib",
            str(CALIB_DIGITS),
            "--calib-size",
            "120",
            "--eval-data",
            "digits",
            "--max-drop",
            "1.0",
            "--out",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["float_top1"] > 0.85 and {a["format"] for a in report["artifacts"]} == {"tflite", "onnx"}
    for artifact in report["artifacts"]:
        plain, kept = artifact["attempts"]  # plain INT8, then one tensor kept float
        assert plain["float_layers"] == [] and plain["drop"] > 30.0, artifact["format"]  # plain INT8 collapses
        assert artifact["worst_layers"][0]["layers"] == ["outlier"] and artifact["worst_layers"][0]["error"] > 0.5
        assert artifact["within_budget"] and artifact["drop"] <= 1.0 and kept["drop"] == artifact["drop"]
        # the outlier tensor never becomes INT8: its producer and its consumer run in float
        assert artifact["float_layers"] == ["outlier", "logits"]
        assert read_model_info(artifact["path"]).provenance["float_layers"] == artifact["float_layers"]
    tflite_artifact = next(a for a in report["artifacts"] if a["format"] == "tflite")
    model_bytes = Path(tflite_artifact["path"]).read_bytes()
    # float math only where it was asked for: the kept layers and the (de)quantize ops around them
    float_ops = sorted(tflite_graph.float_ops(model_bytes))
    assert float_ops == ["DEQUANTIZE", "FULLY_CONNECTED", "FULLY_CONNECTED", "QUANTIZE"]
    assert tflite_graph.io_quantization(model_bytes)["input"]["dtype"] == "int8"
    markdown = Path(report["report_markdown"]).read_text()
    assert (
        "| outlier, logits |" in markdown
        and "within the budget of 1.00 points; kept in float: outlier, logits" in markdown
    )


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_defaults_are_the_config_defaults():
    import inspect

    from edgecls.cli.quantize import quantize as command

    defaults = {name: parameter.default for name, parameter in inspect.signature(command).parameters.items()}
    config = QuantizeConfig()
    renamed = {"format": "formats"}
    for name, default in defaults.items():
        field_name = renamed.get(name, name)
        if field_name in {f.name for f in fields(QuantizeConfig)} and field_name not in (
            "calib",
            "out",
            "eval_data",
            "formats",
        ):
            assert getattr(config, field_name) == default, name
    assert config.formats == () and defaults["format"] == ""  # "" → every format the precision allows


@pytest.mark.slow  # converts
def test_cli_calib_data_and_quantize(dense_models, tmp_path):
    result = runner.invoke(
        app, ["calib-data", "--from", "digits", "--n", "40", "--out", str(tmp_path / "calib"), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    written = json.loads(result.stdout)
    assert written["n_images"] == 40 and written["split"] == "train" and sum(written["per_class"].values()) == 40
    assert len(list((tmp_path / "calib").glob("*/*.png"))) == 40
    result = runner.invoke(app, ["calib-data", "--out", str(tmp_path / "calib")])
    assert result.exit_code == 2 and "not empty" in result.stderr

    result = runner.invoke(
        app,
        [
            "quantize",
            str(dense_models["plain"]),
            "--int8",
            "--calib",
            str(tmp_path / "calib"),
            "--format",
            "onnx",
            "--method",
            "percentile",
            "--eval-data",
            "digits",
            "--out",
            str(tmp_path / "q"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    (artifact,) = report["artifacts"]
    assert artifact["format"] == "onnx" and artifact["path"].endswith("plain_int8.onnx") and artifact["top1"] > 0.8
    assert report["float_top1"] > 0.8 and report["calibration"]["method"] == "percentile"
    assert any("only 40 calibration images" in message for message in report["warnings"])
    result = runner.invoke(app, ["quantize", str(dense_models["plain"]), "--fp16", "--out", str(tmp_path / "q")])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "q").glob("*_quantize.json")) == [
        "plain_fp16_quantize.json",
        "plain_int8_quantize.json",
    ]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--int8"], "needs calibration images"),
        (["--int8", "--fp16", "--calib", "CALIB"], "choose one of --int8 and --fp16"),
        (["--int8", "--calib", "EMPTY"], "no decodable images"),
        (["--fp16", "--format", "onnx"], "--fp16 makes TFLite"),
        (["--int8", "--calib", "CALIB", "--io", "int4"], "--io must be one of"),
    ],
)
def test_cli_errors_are_one_line(untrained_model, tmp_path, arguments, message):
    (tmp_path / "empty").mkdir()
    arguments = [
        str(CALIB_DIGITS) if a == "CALIB" else str(tmp_path / "empty") if a == "EMPTY" else a for a in arguments
    ]
    result = runner.invoke(app, ["quantize", str(untrained_model), *arguments])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_a_missed_budget_reports_the_candidate_it_keeps(caplog):
    """When keeping tensors in float makes top-1 worse, the loop keeps plain INT8 and its warning says so (it said
    "after keeping 2 tensor(s) in float" beside a report of 0 layers)."""
    from edgecls.quantize.budget import GraphOp, LayerError, run_budget

    class Requantizer:
        def quantize(self, float_nodes):
            return frozenset(float_nodes)

        def graph(self):
            return [GraphOp(f"op{i}", "CONV_2D", (f"t{i - 1}",), (f"t{i}",), (f"conv{i}",)) for i in range(1, 4)]

        def layer_errors(self):
            return [LayerError(f"t{i}", [f"conv{i}"], "CONV_2D", error=1.0 / i) for i in range(1, 4)]

    top1 = {0: 0.90, 2: 0.88, 3: 0.87}  # ops kept in float (t1: op1 and its reader op2; t2: op3 more) -> top-1

    def evaluate(candidate):
        return top1[len(candidate)], 0.9

    with caplog.at_level("WARNING", logger="edgecls.quantize.budget"):
        outcome = run_budget(Requantizer(), evaluate, float_top1=0.95, max_drop=1.0, max_float_layers=2)
    assert outcome.within_budget is False and outcome.float_layers == [] and outcome.top1 == 0.90
    assert [attempt.top1 for attempt in outcome.attempts] == [0.90, 0.88, 0.87]
    (message,) = [record.getMessage() for record in caplog.records if "max-drop" in record.getMessage()]
    assert "up to 2 tensor(s) kept in float (limit 2)" in message
    assert message.endswith("keeping the most accurate candidate: 0 layer(s) in float, drop 5.00 points")


@pytest.mark.slow
def test_one_saved_model_serves_every_tflite_conversion_of_a_model(dense_models, tmp_path, monkeypatch):
    """A model ``quantize`` converts several times (FP32 for its size, INT8, calibration) is written as a SavedModel
    once (most of a conversion's time), and each conversion is byte for byte Keras' own LiteRT exporter's."""
    from edgecls.adapters import litert_converter
    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.export.tflite import convert_tflite
    from edgecls.quantize import tflite

    writes = []
    write = litert_converter.write_saved_model
    monkeypatch.setattr(litert_converter, "write_saved_model", lambda *a: writes.append(a) or write(*a))
    model = load_keras_model(dense_models["plain"])
    calibration = load_calibration(CALIB_DIGITS, digits_info(), size=20)

    def keras_export(**options) -> bytes:
        model.export(str(tmp_path / "keras.tflite"), format="litert", verbose=False, **options)
        return (tmp_path / "keras.tflite").read_bytes()

    with tflite.converter_source(model) as source:
        fp32, int8 = convert_tflite(source), tflite.convert_int8(source, calibration)
        assert tflite.calibrate(source, calibration) and len(writes) == 1
    assert fp32 == keras_export()
    assert int8 == keras_export(**tflite.int8_converter_options(calibration))
    writes.clear()
    config = QuantizeConfig(calib=str(CALIB_DIGITS), calib_size=20, formats=("tflite",), out=str(tmp_path / "q"))
    quantize(dense_models["plain"], config)
    assert len(writes) == 1  # the FP32 size, the INT8 artifact and the debugger's calibration


@pytest.mark.slow  # converts
def test_fp16_is_measured_not_budgeted(dense_models, tmp_path):
    result = quantize(dense_models["plain"], QuantizeConfig(precision="fp16", eval_data="digits", out=str(tmp_path)))
    (artifact,) = result.artifacts
    assert artifact.format == "tflite" and artifact.precision == "fp16" and artifact.path.endswith("plain_fp16.tflite")
    assert 0.4 < artifact.size_ratio < 0.6 and artifact.agreement >= 0.99 and abs(artifact.drop) <= 0.5
    assert read_model_info(artifact.path).provenance["precision"] == "fp16" and not result.calibration


# --- the ONNX INT8 TensorRT builds as INT8 ------------------------------------------------------


def qdq_nodes(path: Path) -> list[dict]:
    """Every QuantizeLinear/DequantizeLinear of an ONNX file: scale, zero point, axis, and a weight's int8 data."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        axis = next((attribute.i for attribute in node.attribute if attribute.name == "axis"), None)
        nodes.append(
            {
                "name": node.name,
                "op": node.op_type,
                "scale": constants[node.input[1]],
                "zero_point": constants[node.input[2]] if len(node.input) > 2 else None,
                "axis": axis,
                "weight": constants.get(node.input[0]) if node.op_type == "DequantizeLinear" else None,
            }
        )
    return nodes


def check_tensorrt_qdq(path: Path) -> list[dict]:
    """What TensorRT builds as INT8: every zero point an int8 0; weights int8, per output channel, the full 8 bits."""
    nodes = qdq_nodes(path)
    assert nodes, f"{path}: no Q/DQ nodes"
    for node in nodes:
        assert node["zero_point"] is not None and node["zero_point"].dtype == np.int8, node["name"]
        assert not node["zero_point"].any(), f"{node['name']}: zero point {node['zero_point']}"
    constants = [node for node in nodes if node["weight"] is not None]
    assert all(
        node["weight"].dtype == np.int8 for node in constants
    )  # no int32 bias DequantizeLinear: TensorRT rejects it
    weights = [node for node in constants if node["weight"].ndim >= 2]
    assert len(weights) >= 2  # the convolutions' and the dense layers' kernels
    for node in weights:
        weight, scale = node["weight"], node["scale"]
        assert node["axis"] is not None and scale.size == weight.shape[node["axis"]] > 1, node["name"]  # per channel
        per_channel_max = np.abs(np.moveaxis(weight.astype(np.int16), node["axis"], 0).reshape(scale.size, -1)).max(
            axis=1
        )
        assert per_channel_max.max() == 127 and weight.min() >= -127, node[
            "name"
        ]  # 8 bits (reduce_range: <= 64), symmetric
    return nodes


def ort_top1(path: Path) -> float:
    import onnxruntime as ort

    from edgecls.evaluate import validation_set

    images, _ = validation_set(read_model_info(path), "digits")
    # the graph as it reads, op by op (Q/DQ in float): what TensorRT computes. With its graph optimizations on an
    # x86 CPU without VNNI, ONNX Runtime's default U8S8 kernels saturate on full 8-bit weights (66.9 % here, where
    # edgecls.runtime asks for the signed kernels: see runtime.engines.OnnxEngine)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    scores = session.run(None, {session.get_inputs()[0].name: images.images.astype(np.float32)})[0]
    return float(np.mean(scores.argmax(axis=1) == images.labels))


@pytest.mark.slow
def test_tensorrt_onnx_is_symmetric_8bit_and_within_budget(digits_run, tmp_path):
    config = QuantizeConfig(
        calib=str(CALIB_DIGITS),
        calib_size=150,
        formats=("onnx",),
        eval_data="digits",
        onnx_scheme="tensorrt",
        out=str(tmp_path),
    )
    result = quantize(digits_run.model_path, config)
    (artifact,) = result.artifacts
    nodes = check_tensorrt_qdq(Path(artifact.path))
    assert {node["op"] for node in nodes} == {"QuantizeLinear", "DequantizeLinear"}
    assert "tensorrt scheme" in artifact.scheme and "symmetric" in artifact.scheme
    assert read_model_info(artifact.path).provenance["onnx_scheme"] == "tensorrt"
    assert json.loads(Path(result.report_json).read_text())["config"]["onnx_scheme"] == "tensorrt"
    # top-1 through ONNX Runtime itself, against the float Keras model, within the default budget
    top1 = ort_top1(Path(artifact.path))
    assert top1 == pytest.approx(artifact.top1)
    assert 100 * (result.float_top1 - top1) <= QuantizeConfig().max_drop and artifact.within_budget


def test_target_chooses_the_onnx_scheme():
    from edgecls.base.errors import ConfigError
    from edgecls.quantize.config import onnx_scheme_for

    assert {
        name: onnx_scheme_for(name) for name in ("jetson", "jetson-nano", "jetson-orin-nano", "rpi5", "rpi4", "host")
    } == {
        "jetson": "tensorrt",
        "jetson-nano": "tensorrt",
        "jetson-orin-nano": "tensorrt",
        "rpi5": "cpu",
        "rpi4": "cpu",
        "host": "cpu",
    }
    assert QuantizeConfig().onnx_scheme == "cpu"
    with pytest.raises(ConfigError, match="onnx_scheme must be one of cpu, tensorrt"):
        QuantizeConfig(calib="c", onnx_scheme="trt").check()


@pytest.mark.slow  # converts
def test_cli_target_jetson_writes_the_tensorrt_scheme(dense_models, tmp_path):
    reports = {}
    for target in ("jetson", "rpi5", "jetson-nano"):
        result = runner.invoke(
            app,
            [
                "quantize",
                str(dense_models["plain"]),
                "--int8",
                "--calib",
                str(CALIB_DIGITS),
                "--calib-size",
                "100",
                "--format",
                "onnx",
                "--target",
                target,
                "--out",
                str(tmp_path / target),
                "--json",
            ],
        )
        assert result.exit_code == 0, result.stderr
        reports[target] = json.loads(result.stdout)
    assert [reports[t]["config"]["onnx_scheme"] for t in ("jetson", "rpi5", "jetson-nano")] == [
        "tensorrt",
        "cpu",
        "tensorrt",
    ]
    check_tensorrt_qdq(Path(reports["jetson"]["artifacts"][0]["path"]))
    # the CPU scheme is what the check tells apart: 7-bit weights, asymmetric activations
    cpu_nodes = qdq_nodes(Path(reports["rpi5"]["artifacts"][0]["path"]))
    cpu_kernels = [node["weight"] for node in cpu_nodes if node["weight"] is not None and node["weight"].ndim >= 2]
    assert cpu_kernels and max(int(np.abs(kernel.astype(np.int16)).max()) for kernel in cpu_kernels) <= 64
    assert any(node["zero_point"].any() for node in cpu_nodes if node["weight"] is None)
    with pytest.raises(AssertionError):
        check_tensorrt_qdq(Path(reports["rpi5"]["artifacts"][0]["path"]))
    assert not any("lists no INT8" in message for message in reports["jetson"]["warnings"])
    assert any("jetson-nano lists no INT8" in message for message in reports["jetson-nano"]["warnings"])
