"""Structured and magnitude pruning: graph, groups, rebuild equivalence, the command."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from edgecls.base.errors import ConfigError


def _randomise_batchnorm(model, seed: int = 0) -> None:
    """Non-trivial BN statistics: a removed channel then feeds its consumers a
    non-zero constant (beta, mean), so the masked reference is a real test."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.3, beta.shape),
                    rng.normal(0, 0.3, mean.shape),
                    rng.uniform(0.5, 2.0, variance.shape),
                ]
            )


def _prune_in_memory(model, ratio: float, *, criterion: str = "l1", exclude=(), round_to: int = 8):
    from edgecls.prune.graph import analyze
    from edgecls.prune.plan import plan_channels
    from edgecls.prune.rebuild import mask_removed_channels, rebuild

    graph = analyze(model, exclude=exclude)
    keep, plans = plan_channels(model, graph, ratio=ratio, criterion=criterion, round_to=round_to)
    return graph, keep, plans, rebuild(model, graph, keep), mask_removed_channels(model, graph, keep)


# Registry models at their smallest input; widths chosen so a test step stays quick.
MODEL_OPTIONS = {"cnn": dict(channels=1), "mobilenetv2": dict(alpha=0.35), "mobilenetv3small": dict(alpha=0.75)}


def _registry_models() -> list[str]:
    from edgecls.models import list_models

    return list_models()


@pytest.mark.parametrize("name", _registry_models())
@pytest.mark.slow
def test_rebuilt_model_equals_masked_original(name):
    import keras

    from edgecls.models import build_model, get_entry
    from edgecls.models.stats import count_params_and_macs
    from edgecls.prune.rebuild import max_abs_difference, rebuild

    keras.utils.set_random_seed(0)
    options = {"channels": 3, **MODEL_OPTIONS.get(name, {})}
    size = max(32, get_entry(name).min_image_size)
    model = build_model(name, num_classes=10, image_size=(size, size), **options)
    _randomise_batchnorm(model)

    graph, keep, plans, small, masked = _prune_in_memory(model, 0.5)
    assert keep, "something must be pruned at ratio 0.5"
    assert _relative_difference(masked, small) <= EQUIVALENT
    # the masking matters: the unmasked original computes something else
    assert max_abs_difference(model, small) > 1e-3
    _, macs_before = count_params_and_macs(model)
    _, macs_after = count_params_and_macs(small)
    assert macs_after < 0.45 * macs_before
    # the head keeps its classes; layer names and the input survive
    assert small.get_layer("logits").units == 10
    assert [layer.name for layer in small.layers] == [layer.name for layer in model.layers]
    for group in graph.groups:
        if group.name in keep:
            assert small.get_layer(group.producers[0]).output.shape[-1] == len(keep[group.name]) < group.channels

    # ratio 0: the very same function, the very same weights
    same = rebuild(model, graph, {})
    assert max_abs_difference(model, same) == 0.0
    for before, after in zip(model.get_weights(), same.get_weights()):
        np.testing.assert_array_equal(before, after)


# The rebuilt model against the masked original, relative to the size of the logits: float32 summation order alone
# gives 8e-8 to 3.4e-7 (measured on every handler class), a wrong channel the order of the logits themselves. An
# absolute bound cannot hold both: a product of two convolutions on pixels 0..255 has logits near 3e4, where float32
# resolves 2e-3 (1e-4 held on one CPU and failed by 4e-3 on another).
EQUIVALENT = 1e-5


def _relative_difference(reference, candidate) -> float:
    """``max_abs_difference`` over the logit scale ``prune_channels`` divides it by (at least 1)."""
    from edgecls.prune.rebuild import max_abs_difference
    from edgecls.prune.structured import _logit_scale

    return max_abs_difference(reference, candidate) / max(1.0, _logit_scale(reference))


def _functional(build):
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 12, 3), name="pixels")
    outputs = build(inputs)
    model = keras.Model(inputs, outputs)
    _randomise_batchnorm(model)
    return model


def _head(x):
    from keras import layers

    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dense(5, name="logits")(x)


def test_residual_add_concatenate_and_depthwise_groups():
    from keras import layers

    def build(inputs):
        stem = layers.ReLU()(
            layers.BatchNormalization(name="stem_bn")(layers.Conv2D(32, 3, padding="same", name="stem")(inputs))
        )
        branch = layers.Conv2D(32, 1, name="branch")(stem)
        added = layers.Add(name="add")([stem, branch])  # stem and branch share one channel set
        depthwise = layers.DepthwiseConv2D(3, padding="same", name="dw")(added)
        left = layers.Conv2D(16, 1, name="left")(depthwise)
        right = layers.Conv2D(24, 1, name="right")(depthwise)
        joined = layers.Concatenate(name="concat")([left, right])
        joined = layers.BatchNormalization(name="joined_bn")(joined)
        return _head(layers.Conv2D(40, 3, name="mix")(joined))

    model = _functional(build)
    graph, keep, _, small, masked = _prune_in_memory(model, 0.5)
    residual = graph.group("stem")
    assert set(residual.producers) == {"stem", "branch"}
    assert {"stem_bn", "dw"} <= set(residual.members)
    assert set(residual.consumers) >= {"branch", "left", "right"}
    assert "joined_bn" in graph.group("left").members and "joined_bn" in graph.group("right").members
    # the concatenation's consumer reads left's kept channels, then right's, offset by 16
    expected = np.concatenate([keep["left"], 16 + keep["right"]])
    np.testing.assert_array_equal(graph.indices(graph.layers["mix"].input_layout, keep), expected)
    assert small.get_layer("mix").kernel.shape[2] == len(keep["left"]) + len(keep["right"]) == 8 + 16
    assert small.get_layer("dw").kernel.shape[2] == small.get_layer("stem").filters == 16
    assert _relative_difference(masked, small) <= EQUIVALENT


def _handler_samples() -> dict[str, object]:
    """A call of each handled layer class on ``x`` (and ``y``): two 16-channel 12x12 tensors from two convolutions."""
    import keras
    from keras import layers

    return {
        "Activation": lambda x, y: layers.Activation("relu")(x),
        "ActivityRegularization": lambda x, y: layers.ActivityRegularization(l1=0.01)(x),
        "Add": lambda x, y: layers.Add()([x, y]),
        "AlphaDropout": lambda x, y: layers.AlphaDropout(0.1)(x),
        "Average": lambda x, y: layers.Average()([x, y]),
        "AveragePooling2D": lambda x, y: layers.AveragePooling2D(2)(x),
        "BatchNormalization": lambda x, y: layers.BatchNormalization()(x),
        "Concatenate": lambda x, y: layers.Concatenate()([x, y]),
        "Conv2D": lambda x, y: layers.Conv2D(8, 3, padding="same")(x),
        "Cropping2D": lambda x, y: layers.Cropping2D(1)(x),
        "Dense": lambda x, y: layers.Dense(8)(x),
        "DepthwiseConv2D": lambda x, y: layers.DepthwiseConv2D(3, padding="same")(x),
        "Dropout": lambda x, y: layers.Dropout(0.1)(x),
        "ELU": lambda x, y: layers.ELU()(x),
        "Flatten": lambda x, y: layers.Flatten()(x),
        "GaussianDropout": lambda x, y: layers.GaussianDropout(0.1)(x),
        "GaussianNoise": lambda x, y: layers.GaussianNoise(0.1)(x),
        "GlobalAveragePooling2D": lambda x, y: layers.GlobalAveragePooling2D()(x),
        "GlobalMaxPooling2D": lambda x, y: layers.GlobalMaxPooling2D()(x),
        "Identity": lambda x, y: layers.Identity()(x),
        "InputLayer": lambda x, y: x,  # every functional model starts with one
        "LeakyReLU": lambda x, y: layers.LeakyReLU(0.1)(x),
        "MaxPooling2D": lambda x, y: layers.MaxPooling2D(2)(x),
        "Maximum": lambda x, y: layers.Maximum()([x, y]),
        "Minimum": lambda x, y: layers.Minimum()([x, y]),
        "Multiply": lambda x, y: layers.Multiply()([x, y]),
        "ReLU": lambda x, y: layers.ReLU()(x),
        "Rescaling": lambda x, y: layers.Rescaling(0.5, offset=1.0)(x),
        # squeeze-excite: pooled channels back to (N,1,1,C), then scale the feature map by them
        "Reshape": lambda x, y: layers.Multiply()([x, layers.Reshape((1, 1, 16))(layers.GlobalAveragePooling2D()(x))]),
        "SpatialDropout2D": lambda x, y: layers.SpatialDropout2D(0.1)(x),
        "Subtract": lambda x, y: layers.Subtract()([x, y]),
        "UpSampling2D": lambda x, y: layers.UpSampling2D(2)(x),
        "ZeroPadding2D": lambda x, y: layers.ZeroPadding2D(1)(x),
        "ops.Add": lambda x, y: x + y,
        "ops.Divide": lambda x, y: keras.ops.divide(x, 4.0),
        "ops.Maximum": lambda x, y: keras.ops.maximum(x, y),
        "ops.Minimum": lambda x, y: keras.ops.minimum(x, y),
        "ops.Multiply": lambda x, y: x * y,
        "ops.Subtract": lambda x, y: x - y,
        "ops.TrueDivide": lambda x, y: x / 4.0,
    }


def _handled_classes() -> list[str]:
    from edgecls.prune.handlers import list_handlers

    return list_handlers()


@pytest.mark.parametrize("handled", _handled_classes())
def test_every_handled_layer_class_prunes_to_its_masked_original(handled):
    """Each class of the handler registry, between a prunable convolution and the head: traced, cut, equivalent."""
    from keras import layers

    from edgecls.adapters.keras_graph import graph_nodes, is_ops_class

    sample = _handler_samples().get(handled)
    if sample is None:
        pytest.fail(
            f"the handler registry has {handled} and this test no sample call of it: add one to _handler_samples"
        )

    def build(inputs):
        x = layers.Conv2D(16, 3, padding="same", name="conv")(inputs)
        y = layers.Conv2D(16, 3, padding="same", name="conv_b")(inputs)
        out = sample(x, y)
        return layers.Dense(5, name="logits")(out) if len(out.shape) == 2 else _head(out)

    model = _functional(build)
    called = {
        ("ops." if is_ops_class(type(node.operation)) else "") + type(node.operation).__name__
        for node in graph_nodes(model)
    }
    assert handled in called
    graph, keep, _, small, masked = _prune_in_memory(model, 0.5)
    assert graph.unsupported == []
    assert len(keep["conv"]) == 8 and small.get_layer("conv").filters == 8
    assert _relative_difference(masked, small) <= EQUIVALENT


def test_flatten_then_dense_drops_rows_of_removed_channels():
    from keras import layers

    model = _functional(
        lambda inputs: layers.Dense(5, name="logits")(
            layers.Flatten()(layers.MaxPooling2D(4)(layers.Conv2D(16, 3, padding="same", name="conv")(inputs)))
        )
    )
    graph, keep, _, small, masked = _prune_in_memory(model, 0.5)
    assert len(keep["conv"]) == 8
    assert small.get_layer("logits").kernel.shape == (3 * 3 * 8, 5)
    assert _relative_difference(masked, small) <= EQUIVALENT


def test_unknown_layer_blocks_its_group_and_is_reported():
    import keras
    from keras import layers

    class MyConv(keras.layers.Conv2D):  # a subclass may behave differently: not assumed to be a Conv2D
        pass

    def build(inputs):
        a = layers.Conv2D(16, 3, padding="same", name="a")(inputs)
        normed = layers.LayerNormalization(name="ln")(a)  # mixes channels
        b = MyConv(16, 3, padding="same", name="b")(normed)
        c = layers.Conv2D(16, 3, padding="same", name="c")(layers.ReLU()(b))
        return _head(c)

    model = _functional(build)
    graph, keep, plans, small, masked = _prune_in_memory(model, 0.5)
    assert not graph.group("a").prunable and any("LayerNormalization" in reason for reason in graph.group("a").blocked)
    assert {item["layer"] for item in graph.unsupported} >= {"ln", "b"}
    assert "c" in keep and "a" not in keep  # c's group is fine; a's and b's are left alone
    left_alone = {plan.name: plan.left_alone for plan in plans if plan.left_alone}
    assert "a" in left_alone and "LayerNormalization" in left_alone["a"]
    assert small.get_layer("a").filters == 16
    assert _relative_difference(masked, small) <= EQUIVALENT


def test_head_and_excluded_layers_are_never_pruned():
    from keras import layers

    model = _functional(
        lambda inputs: layers.Dense(5, name="logits")(
            layers.Dense(32, name="fc")(layers.Flatten()(layers.Conv2D(16, 3, strides=4, name="conv")(inputs)))
        )
    )
    graph, keep, _, small, _ = _prune_in_memory(model, 0.5, exclude=("conv",))
    assert not graph.group("logits").prunable
    assert any("classifier head" in reason for reason in graph.group("logits").blocked)
    assert any("excluded" in reason for reason in graph.group("conv").blocked)
    assert set(keep) == {"fc"} and small.get_layer("conv").filters == 16
    with pytest.raises(ConfigError, match="--exclude"):
        _prune_in_memory(model, 0.5, exclude=("no_such_layer",))


def test_importance_criteria_pick_the_strongest_channels():
    from keras import layers

    from edgecls.prune.graph import analyze
    from edgecls.prune.importance import channel_importance
    from edgecls.prune.plan import plan_channels

    model = _functional(
        lambda inputs: _head(layers.BatchNormalization(name="bn")(layers.Conv2D(16, 1, name="conv")(inputs)))
    )
    conv, bn = model.get_layer("conv"), model.get_layer("bn")
    kernel = np.ones((1, 1, 3, 16), np.float32) * np.arange(1, 17, dtype=np.float32)  # filter norm grows with index
    conv.set_weights([kernel, np.zeros(16, np.float32)])
    gamma, beta, mean, variance = bn.get_weights()
    bn.set_weights([np.arange(16, 0, -1).astype(np.float32), beta, mean, variance])  # gamma shrinks with index
    graph = analyze(model)
    group = graph.group("conv")
    l1, _ = channel_importance(model, graph, group, "l1")
    assert np.argmax(l1) == 15
    keep, _ = plan_channels(model, graph, ratio=0.5, criterion="bn-gamma", round_to=1)
    np.testing.assert_array_equal(keep["conv"], np.arange(8))  # largest |gamma|: the first eight
    # a group without BatchNormalization falls back to l1, and says so
    no_bn = _functional(lambda inputs: _head(layers.Conv2D(16, 1, name="conv")(inputs)))
    graph = analyze(no_bn)
    _, used = channel_importance(no_bn, graph, graph.group("conv"), "bn-gamma")
    assert used == "l1"


@pytest.mark.parametrize(
    "channels,ratio,round_to,expected",
    [
        (96, 0.5, 8, 48),
        (20, 0.0, 8, 20),
        (20, 0.5, 8, 16),
        (12, 0.5, 8, 8),
        (64, 0.9, 8, 8),
        (10, 0.95, 1, 8),
        (33, 0.5, 1, 17),
    ],
)
def test_kept_counts_round_up_and_respect_the_floor(channels, ratio, round_to, expected):
    from edgecls.prune.plan import kept_count

    assert kept_count(channels, ratio, min_channels=8, round_to=round_to) == expected


def test_count_params_and_macs():
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8*9*1*4 = 2304
    x = layers.DepthwiseConv2D(3, padding="same")(x)  # 8*8*9*4 = 2304
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(2)(x)  # 4*2 = 8
    model = keras.Model(inputs, outputs)
    from edgecls.models.stats import count_params_and_macs

    assert count_params_and_macs(model) == (model.count_params(), 2304 + 2304 + 8)


def test_magnitude_masks_survive_training():
    import keras
    from keras import layers

    from edgecls.prune.magnitude import apply_masks, keep_masks_callback, magnitude_masks, sparsity_report

    model = _functional(lambda inputs: _head(layers.Conv2D(16, 3, name="conv")(inputs)))
    masks = magnitude_masks(model, 0.8)
    assert set(masks) == {"conv", "logits"}
    assert abs(1 - masks["conv"].mean() - 0.8) < 1 / masks["conv"].size
    apply_masks(model, masks)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    rng = np.random.default_rng(0)
    model.fit(
        rng.uniform(0, 255, (32, 12, 12, 3)),
        rng.normal(size=(32, 5)),
        epochs=2,
        batch_size=8,
        verbose=0,
        callbacks=[keep_masks_callback(masks)],
    )
    report = sparsity_report(model, masks)
    removed = sum(int((~mask).sum()) for mask in masks.values())
    assert (
        report["kernel_sparsity"] == pytest.approx(removed / sum(mask.size for mask in masks.values()))
        and report["kernel_sparsity"] > 0.79
    )
    assert np.all(np.asarray(model.get_layer("conv").kernel)[~masks["conv"]] == 0)


def test_config_errors():
    from edgecls.prune import PruneConfig

    for config, message in [
        (PruneConfig(ratio=1.0), "--ratio"),
        (PruneConfig(method="random"), "--method"),
        (PruneConfig(criterion="taylor"), "criterion"),
        (PruneConfig(steps=3), "--finetune-epochs"),
        (PruneConfig(sparsity=1.5), "--sparsity"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config.check()


def test_fine_tuning_is_on_by_default_when_there_is_data_to_fine_tune_on():
    from edgecls.prune import PruneConfig
    from edgecls.prune.config import PRUNE_FINETUNE_EPOCHS

    assert PruneConfig(data="digits").epochs_to_finetune() == PRUNE_FINETUNE_EPOCHS == 15
    assert PruneConfig().epochs_to_finetune() == 0  # nothing to fine-tune on: prune and measure only
    assert PruneConfig(data="digits", finetune_epochs=0).epochs_to_finetune() == 0
    assert PruneConfig(finetune_epochs=3).epochs_to_finetune() == 3
    PruneConfig(data="digits", steps=2).check()  # rounds fine-tune between them by default
    assert PruneConfig().learning_rate == 2e-3


@pytest.mark.slow
def test_prune_command_end_to_end(digits_run, tmp_path):
    """`edgecls prune` on the trained digits model: a smaller .keras with its labels, and a report."""
    from typer.testing import CliRunner

    from edgecls.adapters.keras_io import load_keras_model
    from edgecls.cli import app
    from edgecls.runtime.metadata import read_model_info

    out = tmp_path / "pruned.keras"
    result = CliRunner().invoke(
        app,
        [
            "prune",
            str(digits_run.model_path),
            "--ratio",
            "0.5",
            "--steps",
            "2",
            "--data",
            "digits",
            "--finetune-epochs",
            "1",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in (
        "params_before",
        "params_after",
        "macs_before",
        "macs_after",
        "top1_before",
        "top1_after",
        "latency_ms_before",
        "latency_ms_after",
        "model_path",
    ):
        assert report[key] is not None, key
    assert report["macs_after"] < 0.35 * report["macs_before"]
    assert report["latency"]["threads"] == 1 and "host" in report["latency"]["where"]
    # two rounds (ratio 0.25 then 0.5 of the original widths), each verified and fine-tuned
    assert len(report["equivalence_max_abs"]) == 2 and max(report["equivalence_max_abs"]) <= 1e-4
    assert len(report["finetune"]["rounds"]) == 2
    assert {group["group"] for group in report["groups"]} == {"conv1", "conv2", "conv3", "fc"}
    assert report["left_alone"][0]["group"] == "logits"
    assert report["top1_after"] > 0.5
    info = read_model_info(out)
    original = read_model_info(digits_run.model_path)
    assert info.labels == original.labels and info.input_size == original.input_size
    assert info.provenance["pruned"]["ratio"] == 0.5 and info.provenance["dataset"] == "digits"
    assert load_keras_model(out).get_layer("conv1").filters == 16
    assert json.loads((tmp_path / "pruned_report.json").read_text())["model_path"] == str(out)
    assert "edgecls.json" in zipfile.ZipFile(out).namelist()


@pytest.mark.slow
def test_magnitude_command_and_errors(digits_run, tmp_path):
    from typer.testing import CliRunner

    from edgecls.cli import app

    out = tmp_path / "sparse.keras"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "prune",
            str(digits_run.model_path),
            "--method",
            "magnitude",
            "--sparsity",
            "0.8",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sparsity"]["kernel_sparsity"] > 0.79
    assert report["params_after"] == report["params_before"] and report["macs_after"] == report["macs_before"]
    assert report["gzip_size_after"] < 0.5 * report["gzip_size_before"]
    bad = runner.invoke(app, ["prune", str(digits_run.model_path), "--out", str(digits_run.model_path)])
    assert bad.exit_code == 2 and "never overwrites" in bad.output
    typo = runner.invoke(
        app,
        [
            "prune",
            str(digits_run.model_path),
            "--method",
            "magnitude",
            "--exclude",
            "conv9",
            "--no-measure",
            "--out",
            str(tmp_path / "x.keras"),
        ],
    )
    assert (
        typo.exit_code == 2
        and "--exclude names no layer of this model: conv9" in typo.stderr
        and not (tmp_path / "x.keras").exists()
    )


def test_a_reshape_across_the_channel_axis_blocks_its_group_and_is_named():
    from keras import layers

    model = _functional(
        lambda inputs: layers.Dense(5, name="logits")(
            layers.Reshape((9 * 16,), name="fold")(
                layers.MaxPooling2D(4)(layers.Conv2D(16, 3, padding="same", name="conv")(inputs))
            )
        )
    )
    from edgecls.prune.graph import analyze

    graph = analyze(model)
    assert graph.unsupported == [
        {"layer": "fold", "class": "Reshape", "reason": "reshapes (3, 3, 16) to (144,), across the channel axis"}
    ]
    assert any("fold" in reason for reason in graph.group("conv").blocked)
