"""Every model in the registry: built at its smallest size, the input/output contract it promises.

Parametrised over ``list_models()``, so a newly registered model is tested for free.
"""

from __future__ import annotations

import numpy as np
import pytest
from shared_models import NUM_CLASSES, registry_model, registry_params

from edgecls.base.errors import ConfigError
from edgecls.models import INPUT_NAME, LOGITS_LAYER, PROBS_LAYER, build_model, get_entry, list_models


@pytest.fixture(scope="module", params=registry_params())
def built(request):
    """(name, model, image size) for a registry entry, built once (shared_models) at its smallest input size with 3
    channels."""
    name = request.param
    return name, registry_model(name), get_entry(name).min_image_size


def test_the_registry_lists_what_it_holds():
    names = list_models()
    assert names == sorted(names) and len(names) == len(set(names)) >= 4
    for name in names:
        entry = get_entry(name)
        assert entry.name == name and entry.description
        assert 1 <= entry.min_image_size <= entry.default_image_size


@pytest.mark.parametrize("name", list_models())
def test_an_input_below_the_minimum_size_is_refused_before_building(name):
    too_small = get_entry(name).min_image_size - 1
    with pytest.raises(ConfigError, match=rf"{name} needs an input of at least .*got {too_small}x{too_small}"):
        build_model(name, num_classes=NUM_CLASSES, image_size=(too_small, too_small), channels=3)


def test_input_and_output_shapes_and_layer_names(built):
    name, model, size = built
    assert model.name == name
    assert [tuple(tensor.shape) for tensor in model.inputs] == [(None, size, size, 3)]
    assert model.layers[0].name == INPUT_NAME and model.inputs[0].name == INPUT_NAME
    assert tuple(model.output.shape) == (None, NUM_CLASSES)
    assert model.get_layer(LOGITS_LAYER).units == NUM_CLASSES  # distillation reaches the logits by name
    assert model.get_layer(PROBS_LAYER) is model.layers[-1]  # the head ends in softmax, nothing after it
    assert model.get_layer(PROBS_LAYER).dtype_policy.compute_dtype == "float32"


def test_raw_pixels_in_normalised_by_the_first_layer(built):
    """The contract: pixels 0..255 go in, the model's own first layers normalise them as its weights expect.

    ``unit`` ([0, 1]) and ``tf`` ([-1, 1]) are checked here by their range; the ImageNet modes (``caffe``,
    ``torch``) against ``keras.applications``' own ``preprocess_input`` in tests/test_backbones.py.
    """
    import keras

    from edgecls.models import preprocessing_output

    name, model, size = built
    first = model.layers[1]
    assert isinstance(first, (keras.layers.Rescaling, keras.layers.Normalization)) or "flip" in first.name, (
        f"first layer is {type(first).__name__}, not the normalisation"
    )
    mode = get_entry(name).preprocessing
    if mode not in ("unit", "tf"):
        return
    normalise = keras.Model(model.input, preprocessing_output(model))
    pixels = np.stack([np.full((size, size, 3), level, dtype=np.float32) for level in (0.0, 127.5, 255.0)])
    low, _, high = (float(value) for value in np.asarray(normalise(pixels)).reshape(3, -1).mean(axis=1))
    assert high == pytest.approx(1.0) and low == pytest.approx(0.0 if mode == "unit" else -1.0)


def test_scores_are_probabilities_over_the_classes(built):
    _, model, size = built
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, size, size, 3)).astype(np.float32)
    probs = np.asarray(model(pixels, training=False))
    assert probs.shape == (2, NUM_CLASSES) and np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
