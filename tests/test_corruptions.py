"""Camera corruptions: deterministic, shape-keeping, and each severity worse than the last in what it corrupts."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgecls.runtime.corruptions import SEVERITIES, corrupt, image_rng, jpeg_bytes, list_corruptions


def scene(height: int = 120, width: int = 160, channels: int = 3) -> np.ndarray:
    """Smooth shading, two hard-edged boxes and fine texture: something every corruption has to act on."""
    y, x = np.mgrid[0:height, 0:width]
    gray = 127 + 50 * np.sin(x / 7.0) * np.cos(y / 11.0) + 15 * np.sin(x * 1.3 + y * 0.7)
    gray[height // 4 : height // 2, width // 4 : width // 2] = 225
    gray[height // 2 :, width // 2 :] = 35
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    if channels == 1:
        return gray
    return np.stack([gray, np.roll(gray, 3, axis=1), np.roll(gray, 5, axis=0)], axis=-1)


def at_every_severity(frame: np.ndarray, name: str, *, seed: int = 0, index: int = 0) -> list[np.ndarray]:
    return [corrupt(frame, name, severity, image_rng(seed, index)) for severity in SEVERITIES]


def laplacian_variance(image: np.ndarray) -> float:
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(gray.astype(np.float64), cv2.CV_64F).var())


def strictly_increasing(values: list[float]) -> bool:
    return all(later > earlier for earlier, later in zip(values, values[1:]))


def strictly_decreasing(values: list[float]) -> bool:
    return strictly_increasing([-value for value in values])


def test_nine_corruptions_are_registered():
    assert set(list_corruptions()) == {
        "gaussian_noise",
        "shot_noise",
        "defocus_blur",
        "motion_blur",
        "brightness",
        "low_light",
        "contrast",
        "jpeg_compression",
        "pixelate",
    }


@pytest.mark.parametrize("name", list_corruptions())
@pytest.mark.parametrize("shape", [(120, 160, 3), (32, 32, 1), (48, 40)])
def test_deterministic_by_seed_and_index_and_keeps_shape(name, shape):
    frame = scene(shape[0], shape[1], 3 if len(shape) == 3 and shape[2] == 3 else 1).reshape(shape)
    first = at_every_severity(frame, name, seed=7, index=3)
    again = at_every_severity(frame, name, seed=7, index=3)
    for one, two in zip(first, again):
        assert one.shape == frame.shape and one.dtype == np.uint8
        np.testing.assert_array_equal(one, two)
    assert not np.array_equal(first[-1], frame), f"{name} at severity 5 left the frame as it was"


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "low_light", "motion_blur"])
def test_random_corruptions_differ_between_images_and_seeds(name):
    frame = scene()
    base = corrupt(frame, name, 3, image_rng(0, 0))
    assert not np.array_equal(base, corrupt(frame, name, 3, image_rng(0, 1)))
    assert not np.array_equal(base, corrupt(frame, name, 3, image_rng(1, 0)))


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise"])
def test_noise_variance_grows_with_severity(name):
    frame = scene()
    variances = [float(np.var(out.astype(np.float64) - frame)) for out in at_every_severity(frame, name)]
    assert strictly_increasing(variances), variances
    assert variances[0] > 100.0  # severity 1 is already visible noise (sigma > 10 grey levels)


@pytest.mark.parametrize("name", ["defocus_blur", "motion_blur"])
@pytest.mark.parametrize("side", [64, 120, 480])
def test_blur_lowers_laplacian_variance_with_severity(name, side):
    frame = scene(side, side)
    sharpness = [laplacian_variance(frame)] + [laplacian_variance(out) for out in at_every_severity(frame, name)]
    assert strictly_decreasing(sharpness), sharpness


def test_blur_scales_with_the_frame_so_a_tiny_frame_sees_a_sub_pixel_defocus():
    # ImageNet-C's severity 1 disk is 3 px on 224 px: on a 32 px frame that is 0.43 px, inside one pixel
    frame = scene(32, 32)
    sharpness = [laplacian_variance(out) for out in at_every_severity(frame, "defocus_blur")]
    assert sharpness[0] == pytest.approx(laplacian_variance(frame), rel=0.01)
    assert strictly_decreasing(sharpness), sharpness


def test_brightness_raises_the_mean_and_low_light_lowers_it():
    frame = scene()
    brighter = [float(out.mean()) for out in at_every_severity(frame, "brightness")]
    darker = [float(out.mean()) for out in at_every_severity(frame, "low_light")]
    assert strictly_increasing([float(frame.mean())] + brighter), brighter
    assert strictly_decreasing([float(frame.mean())] + darker), darker


def test_low_light_is_noisy_relative_to_its_signal():
    frame = np.full((64, 64, 3), 200, np.uint8)  # a flat patch: any spread is noise
    outs = at_every_severity(frame, "low_light")
    signal_to_noise = [float(out.mean() / out.std()) for out in outs]
    assert strictly_decreasing(signal_to_noise), signal_to_noise


def test_contrast_lowers_the_spread_around_the_same_mean():
    frame = scene()
    outs = at_every_severity(frame, "contrast")
    assert strictly_decreasing([float(frame.std())] + [float(out.std()) for out in outs])
    for out in outs:
        assert abs(float(out.mean()) - float(frame.mean())) < 1.0


def test_jpeg_quality_falls_with_severity():
    frame = scene()
    sizes = [jpeg_bytes(frame, severity) for severity in SEVERITIES]
    assert strictly_decreasing(sizes), sizes
    outs = at_every_severity(frame, "jpeg_compression")
    errors = [float(np.abs(out.astype(np.float64) - frame).mean()) for out in outs]
    assert strictly_increasing(errors), errors


@pytest.mark.parametrize("side", [32, 224])
def test_pixelate_lowers_the_number_of_distinct_rows(side):
    frame = scene(side, side)

    def distinct_rows(image: np.ndarray) -> int:  # rows that differ from the one above: the blocks' count
        return 1 + int(np.any(np.diff(image.astype(np.int16), axis=0) != 0, axis=(1, 2)).sum())

    counts = [distinct_rows(out) for out in at_every_severity(frame, "pixelate")]
    assert strictly_decreasing([distinct_rows(frame)] + counts), counts


def test_bad_requests_are_refused():
    frame = scene()
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(frame, "fog", 1, image_rng(0, 0))
    with pytest.raises(ValueError, match="severity must be one of"):
        corrupt(frame, "contrast", 6, image_rng(0, 0))
    with pytest.raises(ValueError, match="uint8"):
        corrupt(frame.astype(np.float32), "contrast", 1, image_rng(0, 0))


def test_the_runtime_module_imports_no_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from edgecls.runtime.corruptions import corrupt, image_rng, list_corruptions\n"
        "frame = np.zeros((40, 40, 3), np.uint8)\n"
        "[corrupt(frame, name, 5, image_rng(0, 0)) for name in list_corruptions()]\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().replace("'", '"')) == []


def test_evaluate_corruptions_reads_the_source_frames(tmp_path):
    """A folder's images are corrupted at their own size (20x20 here, the model takes 8x8), deterministically."""
    pytest.importorskip("onnxruntime")
    from conftest import write_png
    from test_compare import COLOURS, _colour_onnx

    from edgecls.evaluate.robustness import evaluate_corruptions

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name, colour in COLOURS.items():
            for i in range(4):
                image = np.clip(np.asarray(colour) + rng.normal(0, 3, (20, 20, 3)), 0, 255).astype(np.uint8)
                write_png(tmp_path / "colours" / split / name / f"{i}.png", image)
    model = _colour_onnx(tmp_path / "colour.onnx", tuple(COLOURS))
    result = evaluate_corruptions(model, str(tmp_path / "colours"), severities=(1, 5), out_dir=tmp_path / "out")
    again = evaluate_corruptions(model, str(tmp_path / "colours"), severities=(1, 5), out_dir=tmp_path / "again")
    assert result.corruptions == again.corruptions
    assert result.n_images == 12 and result.clean_top1 == 1.0 and result.frames.startswith("source files")
    assert list(result.corruptions) == list(list_corruptions())
    assert all(len(values) == 2 and all(0.0 <= v <= 1.0 for v in values) for values in result.corruptions.values())
    # channel means are what this model looks at; contrast keeps them (ImageNet-C scales about each channel's mean)
    assert result.corruptions["contrast"] == [1.0, 1.0]
    every = [v for values in result.corruptions.values() for v in values]
    assert result.mean_corruption_top1 == pytest.approx(np.mean(every), abs=1e-4)
    saved = json.loads((tmp_path / "out" / "corruptions_colour_onnx.json").read_text())
    assert saved["corruptions"] == result.corruptions and saved["clean_top1"] == 1.0


def test_parse_severities():
    from edgecls.base.errors import ConfigError
    from edgecls.evaluate.robustness import parse_severities

    assert parse_severities("1..5") == (1, 2, 3, 4, 5) and parse_severities("2-4") == (2, 3, 4)
    assert parse_severities("5,1,3") == (1, 3, 5) and parse_severities("3") == (3,)
    for bad in ("0..5", "1..6", "x", ""):
        with pytest.raises(ConfigError, match="--severities"):
            parse_severities(bad)


def test_evaluate_cli_corruptions_and_adversarial_on_digits(digits_run, tmp_path):
    from typer.testing import CliRunner

    from edgecls.cli import app

    runner = CliRunner()
    result = runner.invoke(
        app,
        ["evaluate", str(digits_run.tflite), "--corruptions", "--severities", "1,5", "--out", str(tmp_path), "--json"],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["clean_top1"] >= 0.9 and 0.0 < document["mean_corruption_top1"] < document["clean_top1"]
    assert set(document["corruptions"]) == set(list_corruptions())
    assert document["corruptions"]["gaussian_noise"][1] < document["corruptions"]["gaussian_noise"][0]
    assert document["frames"].startswith("model-size pixels")
    adversarial = runner.invoke(
        app,
        [
            "evaluate",
            str(digits_run.model_path),
            "--adversarial",
            "16",
            "--pgd-steps",
            "5",
            "--artifacts",
            f"{digits_run.tflite},{digits_run.onnx}",
            "--json",
        ],
    )
    assert adversarial.exit_code == 0, adversarial.output
    attack = json.loads(adversarial.stdout)
    assert attack["clean_top1"] >= 0.9 and attack["pgd_top1"] <= attack["fgsm_top1"] < attack["clean_top1"] - 0.1
    for row in attack["transfer"]:  # FP32 exports: the same function, so nearly the same top-1 on the same bytes
        assert abs(row["fgsm_top1"] - attack["fgsm_top1"]) <= 0.02
        assert abs(row["clean_top1"] - attack["clean_top1"]) <= 0.01
    refused = runner.invoke(app, ["evaluate", str(digits_run.tflite), "--adversarial", "8"])
    assert refused.exit_code == 2 and "needs the .keras model" in refused.stderr
