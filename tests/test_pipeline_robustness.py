"""The pipeline's optional [robustness] stage: a corruption top-1 per artifact in the report."""

from __future__ import annotations

import json

import pytest
from conftest import write_pipeline

from edgecls.base.errors import ConfigError
from edgecls.pipeline import load_pipeline_config, run_pipeline

ROBUSTNESS = """
[robustness]
severities = [{severity}]
corruptions = ["gaussian_noise", "contrast"]
"""


def robustness_pipeline(tmp_path, data, severity: int):
    return write_pipeline(tmp_path / "p.toml", data, epochs=1, extra=ROBUSTNESS.format(severity=severity))


@pytest.mark.slow
def test_robustness_stage_adds_a_corruption_column_per_artifact(tmp_path, shapes_folder):
    path = robustness_pipeline(tmp_path, shapes_folder, 5)
    run_pipeline(load_pipeline_config(path, runs_dir=tmp_path / "runs"))
    scored = json.loads((tmp_path / "runs" / "shapes" / "robustness" / "stage.json").read_text())["summary"]["models"]
    assert len(scored) == 2 and all(0 <= m["mean_corruption_top1"] <= 1 for m in scored.values())
    assert all(list(m["corruptions"]) == ["gaussian_noise", "contrast"] for m in scored.values())
    report = (tmp_path / "runs" / "shapes" / "report.md").read_text()
    assert "corruption top-1" in report


def test_robustness_stage_refuses_unknown_severities(tmp_path, shapes_folder):
    path = robustness_pipeline(tmp_path, shapes_folder, 7)
    with pytest.raises(ConfigError, match=r"\[robustness\] severities"):
        run_pipeline(load_pipeline_config(path, runs_dir=tmp_path / "runs"))
