"""Every registry model through the deployment chain: build → export (TFLite, ONNX) with parity → INT8 TFLite.

Pruning of every registry model (equivalence with its masked original) is in tests/test_prune.py, parametrised
over the same ``list_models()``; a new backbone is tested here and there for free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecls.models import list_models

NUM_CLASSES = 4
# the narrowest width each network allows keeps the conversions quick; the graph (SE blocks, hard-swish,
# residuals, the channel flip of ResNet50) is the same at every width
WIDTH = {"mobilenetv2": 0.35, "mobilenetv3small": 0.75, "mobilenetv3large": 0.75}


def _saved_model(name: str, folder: Path) -> Path:
    import keras

    from edgecls.adapters.keras_io import save_keras_model
    from edgecls.models import build_model, get_entry
    from edgecls.runtime.metadata import ModelInfo

    keras.utils.set_random_seed(0)
    size = get_entry(name).min_image_size
    options = {"alpha": WIDTH[name]} if name in WIDTH else {}
    channels = 1 if name == "cnn" else 3
    model = build_model(name, num_classes=NUM_CLASSES, image_size=(size, size), channels=channels, **options)
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([kernel * 20.0, bias])  # decisive scores: top-1 parity is about the graph, not ties
    info = ModelInfo(
        labels=tuple(f"class{i}" for i in range(NUM_CLASSES)),
        input_size=(size, size),
        channels=channels,
        channel_order="GRAY" if channels == 1 else "RGB",
        provenance={"source_model": name, "precision": "fp32"},
    )
    return save_keras_model(model, folder / f"{name}.keras", info)


def _calibration_folder(folder: Path, size: int, channels: int) -> Path:
    from edgecls.data import write_class_folders

    rng = np.random.default_rng(1)
    shape = (size, size) if channels == 1 else (size, size, 3)
    images = [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(4 * NUM_CLASSES)]
    labels = [index % NUM_CLASSES for index in range(len(images))]
    write_class_folders(folder, images, labels, class_names=[f"class{i}" for i in range(NUM_CLASSES)])
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_registry_model_exports_with_parity_and_converts_to_integer_only_int8(name, tmp_path):
    from edgecls.adapters.tflite_graph import TFLiteGraph
    from edgecls.export import export
    from edgecls.models import get_entry
    from edgecls.quantize import QuantizeConfig, quantize

    model_path = _saved_model(name, tmp_path)
    exported = export(model_path, formats=("tflite", "onnx"), out_dir=tmp_path / "export")
    assert {artifact.format for artifact in exported.artifacts} == {"tflite", "onnx"}
    for artifact in exported.artifacts:
        assert artifact.parity_top1 >= 0.995, f"{name} {artifact.format}: top-1 parity {artifact.parity_top1:.3f}"
        assert artifact.parity_max_abs <= 1e-3, f"{name} {artifact.format}: max |d| {artifact.parity_max_abs:.2e}"

    calib = _calibration_folder(tmp_path / "calib", get_entry(name).min_image_size, 1 if name == "cnn" else 3)
    result = quantize(
        model_path, QuantizeConfig(calib=str(calib), calib_size=16, formats=("tflite",), out=str(tmp_path))
    )
    (artifact,) = result.artifacts
    graph = TFLiteGraph.read(artifact.path)
    assert artifact.float_ops == 0 and graph.float_ops() == [], (
        f"{name}: float ops left in the INT8 graph: {sorted({op.op_type for op in graph.float_ops()})}"
    )
    assert any(op.computes_in_integer for op in graph.ops)
