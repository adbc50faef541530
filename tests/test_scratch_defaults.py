"""Training from scratch with the defaults (issue 26): a keras.applications base on real photos, only
the options a new user gives, ends above chance; BatchNorm statistics re-estimated before validation.

Real-photo folders come from ``benchmarks/photoset.py`` (imported from there).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
def test_mobilenetv3small_from_scratch_with_the_default_augmentation_is_above_chance(tmp_path):
    """Only --model, --weights none, --img-size and --epochs: the default augmentation, batch, learning rate,
    patience and BatchNorm handling. Before issue 26 this run validated at chance (25 %) in every epoch."""
    from photoset import TEXTURES4, make_photoset

    from edgecls.train import TrainConfig, train
    from edgecls.train.watch import chance_threshold

    root = make_photoset(tmp_path / "textures", TEXTURES4, train_per_class=100, val_per_class=30, patch_size=64, seed=1)
    result = train(
        TrainConfig(
            data=str(root), model="mobilenetv3small", weights="none", img_size=64, epochs=8, out=str(tmp_path / "run")
        )
    )
    chance, threshold = chance_threshold([label for label in range(4) for _ in range(30)])
    assert chance == 0.25
    assert result.val_accuracy > threshold, result
    assert result.val_accuracy >= 0.6, result
    assert result.warnings == []
