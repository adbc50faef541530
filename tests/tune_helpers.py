"""What the ``edgecls tune`` tests share: a tiny image folder, a tiny space file, the command in a subprocess.

The folder: 3 classes (a red, green or blue square on grey noise) x 12 images, 40x40 PNG: trains to a useful
top-1 in one or two epochs. The space: ``cnn`` (and, where asked, MobileNetV3-Small at α 0.75) at 16/32 px,
``weights = none`` (nothing can be downloaded here), 1-2 epochs, 2 short measuring rounds.
Used by ``tests/test_tune.py``, ``tests/test_tune_parallel.py`` and ``tests/test_box.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import edgecls

TREE = Path(edgecls.__file__).resolve().parents[1]
CLI = (sys.executable, "-c", "from edgecls.cli import main; main()")
COLOURS = {"red": (40, 40, 200), "green": (40, 200, 40), "blue": (200, 40, 40)}  # BGR


def make_folder(root: Path, per_class: int = 12) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = rng.integers(60, 140, size=(40, 40, 3), dtype=np.uint8)
            y, x = rng.integers(2, 18, size=2)
            image[y : y + 20, x : x + 20] = colour
            assert cv2.imwrite(str(root / label / f"{index:02d}.png"), image)
    return root


def write_space(
    path: Path,
    *,
    backbones: str = '["cnn"]',
    sizes: str = "[16, 32]",
    ratios: str = "[0.0, 0.5]",
    precisions: str = '["int8", "fp32"]',
    grid: str = 'backbone = "cnn"\nsizes = [32]',
    epochs: int = 2,
    rung_epochs: int = 1,
    promote: float = 0.5,
    finetune: int = 1,
    rounds: int = 2,
    runs: int = 5,
    extra: str = "",
) -> Path:
    path.write_text(
        f"""backbones = {backbones}
alphas = [0.75]
sizes = {sizes}
ratios = {ratios}
precisions = {precisions}
weights = ["none"]
{extra}
[grid]
{grid}

[training]
epochs = {epochs}
rung_epochs = {rung_epochs}
promote = {promote}
prune_finetune_epochs = {finetune}
batch_size = 16

[measure]
rounds = {rounds}
runs = {runs}
warmup = 1
"""
    )
    return path


def environment() -> dict[str, str]:
    """This tree's edgecls first; TensorFlow quiet; rich's lines whole."""
    return {**os.environ, "PYTHONPATH": str(TREE), "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "250"}


def tune_command(data: Path, space: Path, out: Path, *arguments: str, budget: str = "50") -> list[str]:
    return [*CLI, "tune", "--data", str(data), "--space", str(space), "--max-latency-ms", budget, "--out", str(out),
            *arguments]  # fmt: skip


def run_tune(command: list[str], timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment())


def load_study(out: Path):
    """The study of ``edgecls tune --out OUT``, read as the tests see it (the journal file or the URL it names)."""
    from edgecls.tune import load_saved_study

    return load_saved_study(out).study


def wait_for(predicate, *, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    started = time.monotonic()
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended (exit {process.returncode}) before {what}")
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(1.0)
