"""Data loading: splits, channel conversion, and undecodable files skipped and counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_png

from edgecls.base.errors import DataError
from edgecls.data import load_dataset, load_images, stratified_val_indices, write_class_folders
from edgecls.runtime.preprocess import decode_image, to_model_pixels


def make_messy_folder(root: Path) -> Path:
    """Two classes of good PNGs plus exactly three undecodable files, a grayscale and an RGBA PNG."""
    rng = np.random.default_rng(1)
    for label in ("cat", "dog"):
        for i in range(6):
            write_png(root / label / f"{i}.png", rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    import cv2

    ok, jpeg = cv2.imencode(".jpg", rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    (root / "cat" / "truncated.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    (root / "cat" / "empty.png").write_bytes(b"")
    (root / "dog" / "notes.jpg").write_text("this is not an image\n")
    write_png(root / "dog" / "gray.png", rng.integers(0, 255, (24, 24), dtype=np.uint8))
    write_png(root / "dog" / "rgba.png", rng.integers(0, 255, (24, 24, 4), dtype=np.uint8))
    (root / "dog" / "README.txt").write_text("ignored: not an image suffix\n")
    return root


def test_messy_folder_skips_exactly_the_three_bad_files(tmp_path):
    root = make_messy_folder(tmp_path / "messy")
    dataset = load_dataset(str(root), image_size=(16, 16), channel_order="RGB", val_split=0.25, seed=0)
    assert sorted(Path(p).name for p in dataset.skipped) == ["empty.png", "notes.jpg", "truncated.jpg"]
    assert len(dataset.train) + len(dataset.val) == 14  # 12 good + gray + RGBA
    assert dataset.train.images.shape[1:] == (16, 16, 3) and dataset.train.images.dtype == np.uint8
    assert dataset.class_names == ("cat", "dog")


def test_every_kept_image_and_its_split_hold_the_pixels_of_its_own_file(tmp_path):
    """Decoded into one array, bad files squeezed out and the split made in place: each row is still its file."""
    root = make_messy_folder(tmp_path / "messy")
    dataset = load_dataset(str(root), image_size=(16, 16), channel_order="RGB", val_split=0.25, seed=0)
    for part in (dataset.train, dataset.val):
        for row, source, label in zip(part.images, part.sources, part.labels):
            expected = to_model_pixels(decode_image(Path(source).read_bytes()), (16, 16), "RGB")
            assert np.array_equal(row, expected), source
            assert dataset.class_names[label] == Path(source).parent.name
    assert not set(dataset.train.sources) & set(dataset.val.sources)


def test_stratified_split_is_deterministic_and_per_class():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    first = stratified_val_indices(labels, 0.2, seed=3)
    assert np.array_equal(first, stratified_val_indices(labels, 0.2, seed=3))
    assert not np.array_equal(first, stratified_val_indices(labels, 0.2, seed=4))
    assert np.bincount(labels[first]).tolist() == [2, 4, 6, 8]


def test_digits_split_and_explicit_val_folder(tmp_path, shapes_folder):
    digits = load_dataset("digits", image_size=(16, 16), seed=0)
    assert (len(digits.train), len(digits.val)) == (1438, 359)
    assert digits.train.images.shape[1:] == (16, 16, 1) and digits.channel_order == "GRAY"
    assert set(digits.train.sources).isdisjoint(digits.val.sources)
    # root/train + root/val: the val folder is the split
    root = tmp_path / "tv"
    (root / "train").mkdir(parents=True)
    shapes_folder.rename(root / "train")
    (root / "val" / "bright").mkdir(parents=True)
    write_png(root / "val" / "bright" / "x.png", np.full((40, 40, 3), 220, np.uint8))
    dataset = load_dataset(str(root), image_size=(20, 20))
    assert len(dataset.val) == 1 and len(dataset.train) == 32 and dataset.split["mode"] == "folders"


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "no such data folder"),
        ("empty", "no class folders"),
        ("one_class", "only one class"),
        ("no_images", "no decodable images"),
    ],
)
def test_bad_folders_raise_clear_errors(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "one_class":
        write_png(root / "a" / "0.png", np.zeros((8, 8, 3), np.uint8))
    if layout == "no_images":
        (root / "a").mkdir()
        (root / "b").mkdir()
        (root / "a" / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=message):
        load_dataset(str(root), image_size=(8, 8))


def test_decode_rejects_truncated_and_converts_channels():
    import cv2

    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", image)
    assert decode_image(png.tobytes()) is not None
    assert decode_image(png.tobytes()[:-20]) is None
    bgr = np.zeros((10, 10, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in BGR
    rgb = to_model_pixels(bgr, (5, 5), "RGB")
    assert rgb.shape == (5, 5, 3) and rgb[0, 0].tolist() == [255, 0, 0]
    gray = to_model_pixels(bgr, (5, 5), "GRAY")
    assert gray.shape == (5, 5, 1) and abs(int(gray[0, 0, 0]) - 76) <= 1  # 0.299 * 255


def test_a_phone_photo_is_read_upright_as_its_exif_orientation_says(tmp_path):
    """Phones store a portrait photo sideways with EXIF Orientation 6 (rotate 90° clockwise to show)."""
    import io

    from PIL import Image

    from edgecls.data import load_images

    stored = np.zeros((60, 100, 3), np.uint8)
    stored[:, :50] = 255  # as stored: landscape, the left half white
    photo = Image.fromarray(stored)
    exif = photo.getexif()
    exif[0x0112] = 6  # Orientation
    encoded = io.BytesIO()
    photo.save(encoded, "JPEG", quality=95, exif=exif.tobytes())
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "portrait.jpg").write_bytes(encoded.getvalue())

    shown = decode_image(encoded.getvalue())
    assert shown.shape == (100, 60, 3)  # portrait, as every viewer shows it
    assert shown[:40].mean() > 240 and shown[60:].mean() < 15  # the white half is now on top
    images, _, _ = load_images(tmp_path / "flat", image_size=(16, 16), channel_order="GRAY")
    pixels = images.images[0, :, :, 0].astype(int)
    assert pixels[:6].mean() > 240 and pixels[10:].mean() < 15, "training would see the photo lying on its side"


def test_tiff_is_read_and_other_files_are_counted_not_silently_dropped(tmp_path, caplog):
    import cv2

    root = tmp_path / "data"
    for label, value in (("dark", 30), ("bright", 220)):
        for index in range(4):
            write_png(root / label / f"{index}.png", np.full((12, 12, 3), value, np.uint8))
    (root / "bright" / "scan.tiff").write_bytes(
        cv2.imencode(".tiff", np.full((12, 12), 200 * 257, np.uint16))[1].tobytes()
    )  # 16-bit gray
    (root / "dark" / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (root / "dark" / "notes.txt").write_text("shot on a tripod")
    (root / "dark" / ".DS_Store").write_bytes(b"\x00")
    with caplog.at_level("WARNING", logger="edgecls.data"):
        dataset = load_dataset(str(root), image_size=(8, 8), val_split=0.2)
    everything = {*dataset.train.sources, *dataset.val.sources}
    assert len(everything) == 9 and any(source.endswith("scan.tiff") for source in everything)
    tiff = np.concatenate([dataset.train.images, dataset.val.images])[
        [source.endswith("scan.tiff") for source in [*dataset.train.sources, *dataset.val.sources]]
    ]
    assert abs(int(tiff.mean()) - 200) <= 1  # 16-bit scaled to 8
    left_out = [record.getMessage() for record in caplog.records if "left out" in record.getMessage()]
    assert (
        len(left_out) == 1
        and "left out 2 files" in left_out[0]
        and ".heic 1" in left_out[0]
        and "convert HEIC" in left_out[0]
    )


@pytest.mark.parametrize(
    "val_classes, message", [((), "no decodable images"), (("dark", "blue"), "class folders blue are not in")]
)
def test_a_val_folder_must_hold_images_of_train_classes(tmp_path, val_classes, message):
    root = tmp_path / "data"
    for label in ("dark", "bright"):
        for index in range(3):
            write_png(root / "train" / label / f"{index}.png", np.zeros((8, 8, 3), np.uint8))
    (root / "val").mkdir()
    for label in val_classes:
        write_png(root / "val" / label / "0.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=message):
        load_dataset(str(root), image_size=(8, 8))


def test_class_folders_written_are_read_back_pixel_for_pixel(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 255, (5, 8, 8, 1), dtype=np.uint8)
    labels = np.array([0, 1, 1, 0, 1])
    paths = write_class_folders(
        tmp_path / "set", images[..., 0], labels, class_names=("cat", "dog"), stems=[f"im{i}" for i in range(5)]
    )
    assert [p.relative_to(tmp_path / "set").as_posix() for p in paths] == [
        "cat/im0.png",
        "dog/im1.png",
        "dog/im2.png",
        "cat/im3.png",
        "dog/im4.png",
    ]
    images_read, class_names, skipped = load_images(tmp_path / "set", image_size=(8, 8), channel_order="GRAY")
    assert tuple(class_names) == ("cat", "dog") and skipped == []
    read = {Path(source).name: pixels for source, pixels in zip(images_read.sources, images_read.images)}
    for index, path in enumerate(paths):
        np.testing.assert_array_equal(read[path.name], images[index])
    assert not list((tmp_path / "set").rglob(".tmp-*"))  # written through a temporary name, renamed
