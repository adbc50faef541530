"""Every ``.tflite`` edgecls writes loads, agrees in top-1, and reads in ``edgecls info``, on an older LiteRT.

The runtime extra allows LiteRT from 1.1.1 (a Raspberry Pi, aarch64, Python 3.11,
resolves 2.3.0 today: tests/test_box.py); this workstation converts
with TensorFlow 2.21. Set ``EDGECLS_OLD_LITERT_PYTHON`` to the python of a venv
holding only the runtime's packages and that LiteRT, e.g.

    python3 -m venv .venv-litert && .venv-litert/bin/pip install "ai-edge-litert==1.1.1" numpy opencv-python-headless \
        typer rich
    EDGECLS_OLD_LITERT_PYTHON=.venv-litert/bin/python pytest tests/test_runtime_compat.py

The models are made here (TensorFlow), predicted here through the current
LiteRT, then by ``tests/litert_probe.py`` under the old interpreter; both see
the same frames. Without the variable the test is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
OLD_PYTHON = os.environ.get("EDGECLS_OLD_LITERT_PYTHON", "")

pytestmark = pytest.mark.skipif(not OLD_PYTHON, reason="EDGECLS_OLD_LITERT_PYTHON is not set")


@pytest.fixture(scope="module")
def tflite_models(digits_run, digits_quantized) -> list[Path]:
    """FP32 (exported), FP16 and full-integer INT8 of the digits cnn, as edgecls writes them (made once a session)."""
    return digits_quantized.tflite_files(digits_run)


def _frames() -> np.ndarray:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[:200] * (255.0 / 16.0)).astype(np.uint8)
    return np.repeat(images[..., None], 3, axis=-1)


def test_old_litert_loads_and_agrees(tflite_models, tmp_path):
    from edgecls.runtime import Classifier

    frames = _frames()
    np.save(tmp_path / "frames.npy", frames)
    here = {
        str(path): [Classifier(path, threads=1, top_k=1).predict(frame)[0][0] for frame in frames]
        for path in tflite_models
    }
    completed = subprocess.run(
        [OLD_PYTHON, str(ROOT / "tests" / "litert_probe.py"), str(tmp_path / "frames.npy"), *here],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    old = json.loads(completed.stdout.strip().splitlines()[-1])
    assert old["engine"] == "litert", old
    failures = {Path(p).name: r["error"] for p, r in old["models"].items() if "error" in r}
    assert not failures, f"LiteRT {old['version']} cannot load: {failures}"
    for path, labels in here.items():
        agree = sum(a == b for a, b in zip(labels, old["models"][path]["top1"]))
        assert agree == len(labels), f"{Path(path).name}: top-1 agrees on {agree}/{len(labels)} under {old['version']}"
    # edgecls info reads the file itself (edgecls.adapters.tflite_reader): LiteRT 1.x has no tools.flatbuffer_utils.
    from edgecls.evaluate.info import inspect_artifact

    for path in here:
        info = old["models"][path]["info"]
        assert "exit" not in info, f"edgecls info {Path(path).name} under LiteRT {old['version']}: {info}"
        expected = inspect_artifact(path)
        found = (
            info["op_counts"],
            info["params"],
            info["macs"],
            info["integer_ops"],
            info["float_ops"],
            info["labels"],
        )
        assert found == (
            expected.op_counts,
            expected.params,
            expected.macs,
            expected.integer_ops,
            expected.float_ops,
            expected.labels,
        ), Path(path).name
