"""Data past memory: the disk cache and ``--cache none`` give the in-memory pixels, labels, split and skips."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from conftest import write_png

from edgecls.base.errors import ConfigError
from edgecls.data import cache as datacache
from edgecls.data import load_dataset, to_tf_dataset


@pytest.fixture
def folder_with_a_bad_file(shapes_folder):
    (shapes_folder / "dark" / "broken.png").write_bytes(b"not a png")
    return shapes_folder


def _load(root, cache, cache_dir=None, size=24):
    return load_dataset(str(root), image_size=(size, size), cache=cache, cache_dir=cache_dir, val_split=0.25, seed=3)


def _batches(images, *, training):
    pixels, labels = [], []
    for x, y in to_tf_dataset(images, batch_size=5, training=training, seed=7):
        pixels.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(pixels), np.concatenate(labels)


@pytest.mark.parametrize("cache", ["disk", "none"])
def test_each_cache_mode_gives_the_in_memory_pixels_labels_split_and_skips(folder_with_a_bad_file, tmp_path, cache):
    memory = _load(folder_with_a_bad_file, "memory")
    streamed = _load(folder_with_a_bad_file, cache, tmp_path / "cache")
    assert streamed.cache == cache and memory.cache == "memory"
    assert streamed.train.streamed and not memory.train.streamed
    assert streamed.skipped == memory.skipped and len(memory.skipped) == 1
    assert streamed.split == memory.split
    for part in ("train", "val"):
        ours, theirs = getattr(streamed, part), getattr(memory, part)
        assert ours.sources == theirs.sources
        np.testing.assert_array_equal(ours.labels, theirs.labels)
        assert ours.images.shape == theirs.images.shape
        np.testing.assert_array_equal(np.asarray(ours.images), theirs.images)
        np.testing.assert_array_equal(ours.images[3], theirs.images[3])
        np.testing.assert_array_equal(ours.images[2:5], theirs.images[2:5])
    # the tf.data pipelines: the same batches in the same (shuffled) order, for training and evaluation
    for training in (True, False):
        ours, theirs = _batches(streamed.train, training=training), _batches(memory.train, training=training)
        np.testing.assert_array_equal(ours[0], theirs[0])
        np.testing.assert_array_equal(ours[1], theirs[1])
    if cache == "disk":
        assert datacache.cache_bytes(tmp_path / "cache") >= len(memory.train.sources) * 24 * 24 * 3


def test_the_disk_cache_is_reused_and_a_changed_file_invalidates_it(shapes_folder, tmp_path):
    cache_dir = tmp_path / "cache"
    first = _load(shapes_folder, "disk", cache_dir)
    data_file = cache_dir / "all.u8"
    written = data_file.stat().st_mtime_ns
    again = _load(shapes_folder, "disk", cache_dir)
    assert data_file.stat().st_mtime_ns == written  # reused, not decoded again
    np.testing.assert_array_equal(np.asarray(again.train.images), np.asarray(first.train.images))
    # rewrite one image with other pixels: the cache is rebuilt and holds the new ones
    changed = shapes_folder / "bright" / "00.png"
    write_png(changed, np.full((40, 40, 3), 7, np.uint8))
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    rebuilt = _load(shapes_folder, "disk", cache_dir)
    memory = _load(shapes_folder, "memory")
    for part in ("train", "val"):
        np.testing.assert_array_equal(np.asarray(getattr(rebuilt, part).images), getattr(memory, part).images)
    assert not np.array_equal(np.asarray(rebuilt.train.images), np.asarray(first.train.images)) or not np.array_equal(
        np.asarray(rebuilt.val.images), np.asarray(first.val.images)
    )


def test_train_and_val_folders_stream_too(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "split"
    for part, count in (("train", 6), ("val", 3)):
        for label in ("a", "b"):
            for i in range(count):
                write_png(root / part / label / f"{i}.png", rng.integers(0, 255, (30, 30, 3), dtype=np.uint8))
    memory = _load(root, "memory")
    disk = _load(root, "disk", tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["train.json", "train.u8", "val.json", "val.u8"]
    assert disk.split == memory.split
    np.testing.assert_array_equal(np.asarray(disk.val.images), memory.val.images)


def test_auto_keeps_what_fits_in_memory_and_streams_what_does_not(monkeypatch):
    import psutil

    class Free:
        available = 10 * 2**30

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Free())
    assert datacache.resolve_mode("auto", 10_000, (224, 224, 3)) == "memory"  # 1.5 GB of 5 GB
    assert datacache.resolve_mode("auto", 40_000, (224, 224, 3)) == "disk"  # 6.0 GB of 5 GB
    assert datacache.resolve_mode("none", 10, (8, 8, 1)) == "none"
    with pytest.raises(ConfigError, match="--cache must be one of"):
        datacache.resolve_mode("ram", 10, (8, 8, 1))
