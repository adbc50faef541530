"""``edgecls info`` and ``edgecls explain`` (Grad-CAM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import write_png
from typer.testing import CliRunner

from edgecls.cli import app

runner = CliRunner()


def test_info_reads_metadata_ops_and_macs_from_every_format(digits_run):
    from edgecls.evaluate.info import inspect_artifact

    infos = {
        path.suffix: inspect_artifact(path) for path in (digits_run.model_path, digits_run.tflite, digits_run.onnx)
    }
    for info in infos.values():
        assert info.labels == [str(d) for d in range(10)] and info.provenance["dataset"] == "digits"
    keras_info = infos[".keras"]
    # cnn at 32x32x1: conv1 32*32*9*1*32, conv2 16*16*9*32*64, conv3 8*8*9*64*128, fc 128*128, logits 128*10
    expected_macs = 32 * 32 * 9 * 1 * 32 + 16 * 16 * 9 * 32 * 64 + 8 * 8 * 9 * 64 * 128 + 128 * 128 + 128 * 10
    assert keras_info.macs == expected_macs
    assert infos[".tflite"].macs == expected_macs and infos[".onnx"].macs == expected_macs
    tflite = infos[".tflite"]
    assert tflite.op_counts["CONV_2D"] == 3 and tflite.op_counts["FULLY_CONNECTED"] == 2
    assert tflite.integer_ops == 0 and tflite.float_ops  # an FP32 graph computes in float
    assert tflite.inputs[0].shape[1:] == [32, 32, 1]
    assert infos[".onnx"].op_counts["Conv"] == 3


def test_info_on_tflite_needs_no_tensorflow(digits_run):
    """`edgecls info` runs on a Pi: reading a .tflite graph (ops, MACs, quantization) loads no TensorFlow or Keras."""
    import subprocess
    import sys

    code = (
        "import sys; from edgecls.evaluate.info import inspect_artifact; "
        f"info = inspect_artifact({str(digits_run.tflite)!r}); "
        "print(info.macs, info.integer_ops, len(info.float_ops)); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    macs, loaded = result.stdout.splitlines()
    assert int(macs.split()[0]) > 0 and macs.split()[1] == "0"
    assert loaded == "[]"


def test_info_cli_json(digits_run):
    result = runner.invoke(app, ["info", str(digits_run.tflite), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["format"] == "tflite" and report["size_bytes"] == digits_run.tflite.stat().st_size


def test_info_prints_paths_and_labels_as_they_are(digits_run, tmp_path):
    """No rich markup in what the user gave: '[draft]' in a file name is printed, not taken for a style."""
    import shutil

    model = tmp_path / "[draft]" / "[v2]model_fp32.tflite"
    model.parent.mkdir()
    shutil.copy(digits_run.tflite, model)
    result = runner.invoke(app, ["info", str(model)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith(f"{model} (tflite, ")
    assert "labels (10): 0, 1, 2" in result.output


def test_grad_cam_mass_lies_on_the_digit_strokes(digits_run, tmp_path):
    """Heat per pixel is higher on the strokes than on the background, on average over 12 digits."""
    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.evaluate import model_info, validation_set
    from edgecls.evaluate.explain import explain, find_last_conv_layer, grad_cam

    model = load_keras_model(digits_run.model_path)
    layer = find_last_conv_layer(model)
    assert layer == "relu3"
    images, _ = validation_set(model_info(digits_run.model_path))
    ratios = []
    for pixels in images.images[:12]:
        heat, chosen, probability = grad_cam(model, pixels, layer=layer)
        strokes = pixels[:, :, 0] > 96
        ratios.append(heat[strokes].mean() / max(heat[~strokes].mean(), 1e-6))
    assert np.mean(ratios) > 1.2, ratios  # measured 1.42 on this model
    assert np.mean(np.asarray(ratios) > 1.0) >= 0.75, ratios
    # end to end: an image file in, an overlay PNG out
    path = write_png(tmp_path / "digit.png", np.repeat(images.images[0], 3, axis=2))
    result = explain(digits_run.model_path, [path], out_dir=tmp_path / "out")
    (item,) = result.explanations
    assert item.label == str(images.labels[0]) or item.score < 0.9
    import cv2

    overlay = cv2.imread(item.heatmap_png)
    assert overlay.shape == (32, 32, 3)


def test_info_on_a_file_that_is_not_what_its_name_says(digits_run, tmp_path):
    import shutil

    for name, source in (
        ("keras.tflite", digits_run.model_path),
        ("cut.tflite", None),
        ("keras.onnx", digits_run.model_path),
    ):
        path = tmp_path / name
        if source is None:
            path.write_bytes(digits_run.tflite.read_bytes()[:4000])  # truncated
        else:
            shutil.copy(source, path)
        result = runner.invoke(app, ["info", str(path)])
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {path}: not a valid"), result.stderr


def test_explain_keeps_one_overlay_per_image_even_with_the_same_file_name(digits_run, tmp_path):
    from edgecls.evaluate.explain import explain

    first = write_png(tmp_path / "a" / "img.png", np.zeros((8, 8), np.uint8))
    second = write_png(tmp_path / "b" / "img.png", np.full((8, 8), 255, np.uint8))
    result = explain(digits_run.model_path, [first, second], out_dir=tmp_path / "out")
    written = [item.heatmap_png for item in result.explanations]
    assert len(set(written)) == 2 and all(Path(path).is_file() for path in written)
