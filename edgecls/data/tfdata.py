"""Training batches: an ``ImageSet`` as a shuffled, augmented, prefetched ``tf.data`` pipeline."""

from __future__ import annotations

import numpy as np

from edgecls.base.errors import DataError
from edgecls.data.sets import ImageSet

# --augment auto for photos: all three, at the strengths below (rotation up to 0.05 of a turn, zoom up to 10 %).
# Measured from scratch (benchmarks/results/defaults_scratch.json, issue 26: mobilenetv3small and mobilenetv2 alpha
# 0.35, textures4 and photos10, 64 px, 25 epochs, lr 1e-3): mean val top-1 84.8 % with all three, 81.8 % with flip
# alone; on the three runs also made without augmentation, 84.4 % against 69.1 % (photos10 most: 87.0 / 73.3 % with
# all three, 65.0 / 52.7 % without).
AUGMENTATIONS = ("flip", "rotate", "zoom")


CAMERA_AUGMENTATIONS = ("robust", "randaugment")  # edgecls.data.augment: camera corruptions; Keras' RandAugment


def parse_augment(augment: str, data: str) -> tuple[str, ...]:
    """``auto`` → none for digits (a flipped 2 is not a 2), flip+rotate+zoom otherwise."""
    if augment == "auto":
        return () if data == "digits" else AUGMENTATIONS
    if augment in ("", "none"):
        return ()
    parts = tuple(part.strip() for part in augment.split(",") if part.strip())
    unknown = [part for part in parts if part not in (*AUGMENTATIONS, *CAMERA_AUGMENTATIONS)]
    if unknown:
        raise DataError(
            f"unknown augmentation {', '.join(unknown)}; choose from "
            f"{', '.join((*AUGMENTATIONS, *CAMERA_AUGMENTATIONS))}, auto or none"
        )
    return parts


def to_tf_dataset(images: ImageSet, *, batch_size: int, training: bool, seed: int = 0, augment: tuple[str, ...] = ()):
    """A batched, cached, prefetched ``tf.data.Dataset`` of (float32 pixels 0..255, label).

    Every mode shuffles row indices and reads each batch's rows: from the in-memory array, or from a
    streamed ``ImageSet`` (disk cache or ``--cache none``), in the same order for the same seed. The
    pixels are never copied into the pipeline: slicing them in (``from_tensor_slices``), caching and a
    full shuffle buffer each held one more copy, 3.6 times the array in all (10.5 GB for 2.9 GB of
    pixels, ``benchmarks/scale.py``).
    """
    import keras
    import tensorflow as tf

    dataset = _indexed_batches(images, batch_size=batch_size, training=training, seed=seed)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training and set(augment) - set(CAMERA_AUGMENTATIONS):
        layers = []
        if "flip" in augment:
            layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
        if "rotate" in augment:
            layers.append(keras.layers.RandomRotation(0.05, fill_mode="reflect", seed=seed))
        if "zoom" in augment:
            layers.append(keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed))
        pipeline = keras.Sequential(layers)
        dataset = dataset.map(lambda x, y: (pipeline(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training and set(augment) & set(CAMERA_AUGMENTATIONS):
        from edgecls.data.augment import robust_augment

        dataset = robust_augment(
            dataset,
            seed=seed,
            channels=int(images.images.shape[-1]),
            corrupt="robust" in augment,
            rand_augment="randaugment" in augment,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _indexed_batches(images: ImageSet, *, batch_size: int, training: bool, seed: int):
    """Batches of (uint8 pixels, label): row indices shuffled, batched, then each batch's rows read
    (``StreamedImages.read`` for a streamed set, fancy indexing of the array in memory)."""
    import tensorflow as tf

    source, labels = images.images, tf.constant(images.labels)
    row_shape = tuple(source.shape[1:])
    rows = source.read if images.streamed else lambda batch: np.ascontiguousarray(source[batch])
    dtype = tf.uint8 if images.streamed else tf.as_dtype(source.dtype)
    indices = tf.data.Dataset.range(len(images))
    if training:
        indices = indices.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)

    def read(batch):
        pixels = tf.numpy_function(rows, [batch], dtype, stateful=False)
        return tf.ensure_shape(pixels, (None, *row_shape)), tf.gather(labels, batch)

    return indices.batch(batch_size).map(read, num_parallel_calls=tf.data.AUTOTUNE)
