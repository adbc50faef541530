"""Registry models that several test files read and none changes, each built once per session.

Building a keras.applications network is seconds (ResNet50, the EfficientNets); the contract tests of
tests/test_models.py and the preprocessing tests of tests/test_backbones.py read the same models, so they share
them. A test that changes a model (pruning's BatchNorm statistics, the registry chain's scaled logits) builds its own.
"""

from __future__ import annotations

import functools

import pytest

from edgecls.models import list_models

NUM_CLASSES = 5

# The registry entries whose tests also run in the fast lane (`make test-fast`): the small networks, built in well
# under a second each. The others (ResNet50, the EfficientNets, MobileNetV3-Large) run in `make test`.
FAST_LANE = ("cnn", "mobilenetv2", "mobilenetv3small")


def registry_params() -> list:
    """``list_models()`` as test parameters, those outside ``FAST_LANE`` marked slow: a new model is tested for free."""
    return [pytest.param(name, marks=() if name in FAST_LANE else pytest.mark.slow) for name in list_models()]


@functools.cache
def registry_model(name: str):
    """``name`` at its smallest input size, 3 channels, its default width, ``NUM_CLASSES`` classes, seed 0.

    Shared: read it, never change it.
    """
    import keras

    from edgecls.models import build_model, get_entry

    keras.utils.set_random_seed(0)
    size = get_entry(name).min_image_size
    return build_model(name, num_classes=NUM_CLASSES, image_size=(size, size), channels=3)
