"""Data: image folders and the built-in digits as uint8 pixels, where they live while training, and tf.data batches.

>>> from edgecls.data import load_dataset
>>> dataset = load_dataset("digits", image_size=(32, 32))  # doctest: +SKIP
"""

from edgecls.data.folders import (
    DIGITS_ON_A_DEVICE,
    MIN_IMAGES_PER_CLASS,
    load_dataset,
    load_images,
    stratified_val_indices,
)
from edgecls.data.sets import BUILTIN_DATASETS, Dataset, ImageSet, default_channel_order
from edgecls.data.tfdata import AUGMENTATIONS, CAMERA_AUGMENTATIONS, parse_augment, to_tf_dataset
from edgecls.data.write import write_class_folders, write_image

__all__ = [
    "AUGMENTATIONS",
    "BUILTIN_DATASETS",
    "CAMERA_AUGMENTATIONS",
    "DIGITS_ON_A_DEVICE",
    "MIN_IMAGES_PER_CLASS",
    "Dataset",
    "ImageSet",
    "default_channel_order",
    "load_dataset",
    "load_images",
    "parse_augment",
    "stratified_val_indices",
    "to_tf_dataset",
    "write_class_folders",
    "write_image",
]
