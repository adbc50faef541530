"""edgecls compare: the statistics by hand, the verdict, a whole A/B on tiny ONNX classifiers, and refusal."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecls.base.errors import ModelError
from edgecls.evaluate.compare import compare, mcnemar_exact, verdict, wilson_interval
from edgecls.runtime.metadata import ModelInfo

COLOURS = {"a_red": (20, 20, 230), "b_green": (20, 230, 20), "c_blue": (230, 20, 20)}  # BGR; sorted: R, G, B


def test_mcnemar_exact_by_hand():
    # b = 1, c = 9: n = 10, P(X <= 1) = (1 + 10) / 1024, doubled
    assert mcnemar_exact(1, 9) == 0.021484375 == mcnemar_exact(9, 1)
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0  # the doubled middle is capped at 1
    assert mcnemar_exact(3, 12) == pytest.approx(2 * sum(math.comb(15, k) for k in range(4)) / 2**15)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_wilson_interval_by_hand():
    low, high = wilson_interval(9, 10)  # 95 %: centre (0.9 + 1.9208/10) / 1.38415, ...
    assert (round(low, 4), round(high, 4)) == (0.5958, 0.9821)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(1 - high) and low == pytest.approx(0.4038, abs=1e-4)


def test_verdict():
    assert verdict(1, 9, mcnemar_exact(1, 9)) == "B better"
    assert verdict(9, 1, mcnemar_exact(9, 1)) == "B worse"
    assert verdict(2, 6, mcnemar_exact(2, 6)) == "no significant difference at α = 0.05"  # p = 0.289
    assert verdict(0, 0, 1.0) == "no significant difference at α = 0.05"
    assert verdict(1, 9, 0.021, alpha=0.01).startswith("no significant difference at α = 0.01")


def _colour_onnx(path: Path, labels: tuple[str, ...], *, bias=(0.0, 0.0, 0.0), gain: float = 0.05) -> Path:
    """softmax(gain * mean of each RGB channel + bias), with edgecls metadata: a classifier of the frame's colour."""
    import onnx
    from onnx import TensorProto, helper

    from edgecls.export.metadata import embed_onnx

    nodes = [
        helper.make_node("ReduceMean", ["image"], ["means"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["means", "gain"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "colour",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 8, 8, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
        [
            helper.make_tensor("gain", TensorProto.FLOAT, [], [gain]),
            helper.make_tensor("bias", TensorProto.FLOAT, [3], list(bias)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(embed_onnx(model, ModelInfo(labels, (8, 8), 3, "RGB")), str(path))
    return path


@pytest.fixture
def colour_folder(tmp_path) -> Path:
    """train/ and val/ of three colours; val's red ones fade towards gray, so a biased model misses some."""
    from conftest import write_png

    rng = np.random.default_rng(0)
    root = tmp_path / "colours"
    for split, count in (("train", 3), ("val", 10)):
        for name, colour in COLOURS.items():
            for i in range(count):
                strength = 1.0 - 0.07 * i if name == "a_red" else 1.0  # 1.0 .. 0.37
                pixels = 120 + strength * (np.asarray(colour, np.float32) - 120)
                image = np.clip(pixels + rng.normal(0, 3, (20, 20, 3)), 0, 255).astype(np.uint8)
                write_png(root / split / name / f"{i:02d}.png", image)
    return root


def test_a_whole_comparison(colour_folder, tmp_path):
    pytest.importorskip("onnxruntime")
    labels = tuple(COLOURS)
    good = _colour_onnx(tmp_path / "good.onnx", labels)
    biased = _colour_onnx(tmp_path / "biased.onnx", labels, bias=(0.0, 8.0, 0.0))  # leans to green: the 6 faint reds go
    worse = compare(good, biased, str(colour_folder), out_dir=tmp_path / "report")
    assert worse.n_images == 30 and worse.a["top1"] == 1.0
    assert worse.b_only_correct == 0 and worse.a_only_correct == 6  # red wins while 10.5 * strength > 8
    assert worse.b["correct"] == 30 - worse.a_only_correct
    assert worse.mcnemar_p == 2 / 2**6 and worse.verdict == "B worse"
    low, high = worse.b["interval"]
    assert low < worse.b["top1"] < high
    red = next(row for row in worse.per_class if row["label"] == "a_red")
    assert red["broken"] == worse.a_only_correct and red["fixed"] == 0 and red["change"] < 0
    assert all(row["change"] == 0 for row in worse.per_class if row["label"] != "a_red")
    saved = json.loads((tmp_path / "report" / "compare_good_vs_biased.json").read_text())
    assert saved["verdict"] == "B worse" and saved["mcnemar_p"] == worse.mcnemar_p
    assert compare(biased, good, str(colour_folder)).verdict == "B better"
    assert compare(good, good, str(colour_folder)).verdict == "no significant difference at α = 0.05"


def test_cli_json_and_refusal_of_different_labels(colour_folder, tmp_path):
    pytest.importorskip("onnxruntime")
    from edgecls.cli import app

    runner = CliRunner()
    good = _colour_onnx(tmp_path / "good.onnx", tuple(COLOURS))
    other = _colour_onnx(tmp_path / "other.onnx", ("cat", "dog", "fox"))
    result = runner.invoke(app, ["compare", str(good), str(good), "--data", str(colour_folder), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {"a", "b", "mcnemar_p", "verdict"} <= set(document)
    assert document["a"]["top1"] == 1.0 and len(document["a"]["interval"]) == 2 and document["mcnemar_p"] == 1.0
    refused = runner.invoke(app, ["compare", str(good), str(other), "--data", str(colour_folder)])
    assert refused.exit_code == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: good.onnx and other.onnx have different labels")
    with pytest.raises(ModelError, match="different labels"):
        compare(good, other, str(colour_folder))


def test_latency_on_a_target(colour_folder, tmp_path):
    pytest.importorskip("onnxruntime")
    good = _colour_onnx(tmp_path / "good.onnx", tuple(COLOURS))
    result = compare(good, good, str(colour_folder), target="host", runs=5, warmup=1)
    assert result.latency["target"] == "host" and result.latency["runs"] == 5
    assert result.latency["a"]["p50_ms"] > 0 and result.latency["b"]["engine"].startswith("onnxruntime")
