"""``edgecls watch`` and ``edgecls.runtime.watch``: frames in, predictions and the source's stats out."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import channel_means_onnx, write_png
from typer.testing import CliRunner

from edgecls.cli import app
from edgecls.runtime import WatchConfig, watch


@pytest.fixture(scope="module")
def means_model(tmp_path_factory):
    return channel_means_onnx(tmp_path_factory.mktemp("watch") / "means.onnx")


def test_watch_json_is_one_line_a_frame_then_the_summary(means_model):
    result = CliRunner().invoke(app, ["watch", str(means_model), "--source", "test://?fps=60&frames=30", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    frames, summary = lines[:-1], lines[-1]["summary"]
    numbers = [frame["sequence"] for frame in frames]
    assert numbers == sorted(set(numbers)) and numbers[-1] == 29 and len(frames) >= 10  # a loaded machine skips some
    assert [frame["dropped"] for frame in frames] == [b - a - 1 for a, b in zip([-1, *numbers], numbers)]
    for frame in frames:
        assert [entry["label"] for entry in frame["top"]][0] in ("red", "green", "blue") and len(frame["top"]) == 3
        assert 0 <= frame["inference_ms"] <= frame["age_ms"] < 1000
    assert (summary["frames"], summary["stopped"]) == (len(frames), "source ended")
    stats = summary["stats"]
    assert (stats["captured"], stats["processed"], stats["skipped"]) == (30, len(frames), 30 - len(frames))
    assert stats["capture_fps"] == pytest.approx(60, rel=0.25) and summary["engine"].startswith("onnxruntime")


def test_watch_stops_at_its_duration_and_renders_the_stats(means_model):
    result = CliRunner().invoke(app, ["watch", str(means_model), "--source", "test://?fps=30", "--duration", "1"])
    assert result.exit_code == 0, result.output
    assert "(duration) from test source 640x480 at 30 fps" in result.stdout
    capture_fps = float(re.search(r"capture ([0-9.]+) fps", result.stdout).group(1))
    assert 25 <= capture_fps <= 35
    assert "frame age p50" in result.stdout and "onnxruntime" in result.stdout


def test_watch_collects_the_unsure_frames(means_model, tmp_path):
    for i in range(4):  # gray: the three channel means tie, the model is unsure of every frame
        write_png(tmp_path / "frames" / f"{i}.png", np.full((16, 16, 3), 100, np.uint8))
    report = watch(WatchConfig(str(means_model), str(tmp_path / "frames"), collect=str(tmp_path / "unsure")))
    assert report.frames == 4 and report.stopped == "source ended"
    assert report.collected == 1  # at most one a second (Collector's every_s)
    assert len(list((tmp_path / "unsure").glob("*.json"))) == 1


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("picam://0?size=10", "error: picam://0?size=10: size is WIDTHxHEIGHT in pixels"),
        ("nowhere.mp4", "error: source 'nowhere.mp4': no such file or folder"),
    ],
)
def test_a_bad_source_is_one_line_and_exit_2(means_model, source, message):
    result = CliRunner().invoke(app, ["watch", str(means_model), "--source", source])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), result.output
