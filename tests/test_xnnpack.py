"""Which ops XNNPACK leaves to LiteRT's built-in kernels: why an INT8 TFLite can run slower than its FP32 graph."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def hard_swish_models(tmp_path_factory):
    """A small convolutional model with one hard-swish (MobileNetV3's activation), as FP32 and INT8 TFLite."""
    import keras
    from keras import layers

    from edgecls.export.tflite import int8_options, write_tflite
    from edgecls.runtime.metadata import ModelInfo

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", name="conv1")(layers.Rescaling(1 / 255)(inputs))
    x = layers.Activation("hard_silu", name="hard_swish")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.Dense(4, name="logits")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, layers.Softmax(name="probs")(x))
    folder = tmp_path_factory.mktemp("xnnpack")
    info = ModelInfo(("a", "b", "c", "d"), (16, 16), 3, "RGB")
    images = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), np.uint8)
    return (
        write_tflite(model, folder / "fp32.tflite", info),
        write_tflite(model, folder / "int8.tflite", info, **int8_options(images)),
    )


@pytest.mark.slow
def test_an_int8_hard_swish_is_left_to_the_built_in_kernels_and_bench_says_so(hard_swish_models):
    from edgecls.runtime.engines import LiteRTEngine
    from edgecls.runtime.measure import measure_model

    fp32, int8 = hard_swish_models
    assert LiteRTEngine(fp32, threads=1).delegation() == (1, {})  # XNNPACK takes the whole float graph
    partitions, outside = LiteRTEngine(int8, threads=1).delegation()
    assert outside.get("HARD_SWISH") == 1 and partitions == 2  # the INT8 graph split around it
    note = next(note for note in measure_model(int8, threads=1, runs=3, warmup=1).notes if "XNNPACK" in note)
    assert note.startswith("XNNPACK took the graph in 2 partitions; built-in kernels ran ") and "HARD_SWISH x1" in note
    assert not any("partitions" in note for note in measure_model(fp32, threads=1, runs=3, warmup=1).notes)
