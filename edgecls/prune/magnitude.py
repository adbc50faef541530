"""Unstructured magnitude pruning: zero the smallest weights, keep them zero.

Every ``Conv2D``, ``DepthwiseConv2D`` and ``Dense`` kernel loses its
``sparsity`` smallest-magnitude weights (per layer, as
tensorflow-model-optimization does by default). The masks are reapplied after
every training batch, so fine-tuning cannot grow the zeros back.

What it buys is a smaller *compressed* file: a dense FP32 kernel runs exactly
as fast with 80 % zeros in it (XNNPACK and ONNX Runtime multiply them
anyway), so latency stays where it was and the report shows it measured.

>>> masks = magnitude_masks(model, 0.8)  # doctest: +SKIP
>>> apply_masks(model, masks)  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.base.errors import ConfigError

KERNEL_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")


def magnitude_masks(model: Any, sparsity: float, *, exclude: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """``{layer name: bool mask}`` keeping the largest ``1 - sparsity`` of each kernel."""
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"--sparsity must be in [0, 1), got {sparsity}")
    names = {layer.name for layer in model.layers}
    missing = [name for name in exclude if name not in names]
    if missing:  # a typo would otherwise prune the layer the user meant to keep
        raise ConfigError(
            f"--exclude names no layer of this model: {', '.join(missing)}; its layers include "
            f"{', '.join(sorted(names)[:8])}, …"
        )
    masks = {}
    for layer in model.layers:
        if type(layer).__name__ not in KERNEL_LAYERS or layer.name in exclude:
            continue
        kernel = np.asarray(layer.kernel)
        removed = int(np.floor(kernel.size * sparsity))
        mask = np.ones(kernel.size, dtype=bool)
        if removed:
            # exactly `removed` zeros, ties broken by position (stable)
            mask[np.argsort(np.abs(kernel).ravel(), kind="stable")[:removed]] = False
        masks[layer.name] = mask.reshape(kernel.shape)
    return masks


def apply_masks(model: Any, masks: dict[str, np.ndarray]) -> None:
    """Zero the masked-out weights of ``model`` in place."""
    for name, mask in masks.items():
        kernel = model.get_layer(name).kernel
        kernel.assign(np.asarray(kernel) * mask.astype(np.asarray(kernel).dtype))


def keep_masks_callback(masks: dict[str, np.ndarray]) -> Any:
    """A Keras callback that reapplies ``masks`` after every training batch."""
    import keras

    class KeepMasks(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.pairs: list[tuple[Any, Any]] = []

        def on_train_begin(self, logs=None):
            self.pairs = [
                (self.model.get_layer(name).kernel, keras.ops.convert_to_tensor(mask, dtype="float32"))
                for name, mask in masks.items()
            ]

        def on_train_batch_end(self, batch, logs=None):
            for kernel, mask in self.pairs:
                kernel.assign(kernel * keras.ops.cast(mask, kernel.dtype))

    return KeepMasks()


def sparsity_report(model: Any, masks: dict[str, np.ndarray]) -> dict[str, float | int]:
    """Zeros in the pruned kernels and in all of the model's weights."""
    zeros_in_kernels = sum(int(np.sum(np.asarray(model.get_layer(name).kernel) == 0)) for name in masks)
    kernel_weights = sum(int(mask.size) for mask in masks.values())
    all_weights = [np.asarray(weight) for weight in model.weights]
    zeros_total = sum(int(np.sum(weight == 0)) for weight in all_weights)
    total = sum(int(weight.size) for weight in all_weights)
    return {
        "layers_pruned": len(masks),
        "kernel_sparsity": zeros_in_kernels / max(1, kernel_weights),
        "model_sparsity": zeros_total / max(1, total),
        "kernel_weights": kernel_weights,
        "model_weights": total,
    }


def gzip_size(path: str | Path) -> int:
    """Bytes of ``path`` after ``gzip -9`` (what a download or an OTA update costs)."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0))
