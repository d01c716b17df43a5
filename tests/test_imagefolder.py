"""ImageFolders: lazy listing, the stratified limit, worker decoding, and every bad input."""
import numpy as np
import pytest
import torch
from PIL import Image

from vitrobust.data import DataError, load_dataset, load_image_folder, open_train_split
from vitrobust.imagefolder import LazyFolder, index_folder


def _write(root, classes=("a", "b", "c", "d"), per_class=5, size=(40, 30), mode="RGB"):
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = np.full((size[1], size[0], 3), 10 * c + i, dtype=np.uint8)
            Image.fromarray(array).convert(mode).save(root / cls / f"{i:03d}.png")
    return root


def test_listing_decodes_nothing_and_sorts_classes(tmp_path, monkeypatch):
    _write(tmp_path, classes=("zebra", "ant"))
    monkeypatch.setattr("vitrobust.imagefolder.read_image", lambda *a: pytest.fail("decoded"))
    index = index_folder(tmp_path)
    assert index.classes == ("ant", "zebra")
    assert index.ids[:2] == ("ant/000.png", "ant/001.png") and index.labels[0] == 0


def test_limit_is_stratified_and_decodes_only_the_chosen(tmp_path, monkeypatch):
    _write(tmp_path, per_class=5)
    import vitrobust.imagefolder as imagefolder
    decoded = []
    real = imagefolder.read_image
    monkeypatch.setattr(imagefolder, "read_image", lambda path, size: decoded.append(path) or real(path, size))
    data = load_image_folder(tmp_path, image_size=8, limit=8)
    # 8 of 4 classes x 5: two of each class, not the first 8 files (a and b only)
    assert sorted(data.labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert len(decoded) == 8 and len(data.ids) == 8
    # each image is the one its id names: the file's constant colour (10 * class + index)
    for image, image_id, label in zip(data.images, data.ids, data.labels.tolist()):
        cls, name = image_id.split("/")
        assert "abcd".index(cls) == label
        assert round(float(image[0, 0, 0]) * 255) == 10 * label + int(name[:3])


def test_the_subset_is_the_same_however_the_folder_was_written(tmp_path):
    first = _write(tmp_path / "one")
    second = tmp_path / "two"
    for cls in reversed(("a", "b", "c", "d")):   # another creation order on disk
        (second / cls).mkdir(parents=True)
        for f in sorted((first / cls).iterdir(), reverse=True):
            (second / cls / f.name).write_bytes(f.read_bytes())
    one, two = (load_image_folder(p, image_size=8, limit=6) for p in (first, second))
    assert one.ids == two.ids and torch.equal(one.images, two.images)
    assert one.fingerprint == two.fingerprint


def test_ids_are_part_of_a_folders_fingerprint(tmp_path):
    _write(tmp_path, per_class=2)
    data = load_image_folder(tmp_path, image_size=8)
    renamed = type(data)(data.name, data.images, data.labels, data.num_classes,
                         tuple(f"x{i}" for i in data.ids), True)
    assert renamed.fingerprint != data.fingerprint


def test_worker_processes_decode_the_same_pixels_in_the_same_order(tmp_path, monkeypatch):
    _write(tmp_path, per_class=20)
    monkeypatch.setenv("VITROBUST_DATA_WORKERS", "0")
    inline = load_image_folder(tmp_path, image_size=8, limit=70)
    monkeypatch.setenv("VITROBUST_DATA_WORKERS", "2")
    workers = load_image_folder(tmp_path, image_size=8, limit=70)
    assert inline.ids == workers.ids and torch.equal(inline.images, workers.images)


def test_loading_makes_no_tensor_on_the_default_device(tmp_path):
    # any tensor made without an explicit device lands on "meta" and the pixels would be lost
    _write(tmp_path, per_class=2)
    torch.set_default_device("meta")
    try:
        data = load_image_folder(tmp_path, image_size=8, limit=5)
    finally:
        torch.set_default_device(None)
    assert data.images.device.type == data.labels.device.type == "cpu"
    assert data.images.sum() > 0


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16"])
def test_other_colour_modes_become_rgb(tmp_path, mode):
    fmt = "jpeg" if mode == "CMYK" else "png"
    (tmp_path / "a").mkdir()
    Image.new("RGB", (20, 20), (200, 100, 50)).convert(mode).save(tmp_path / "a" / f"x.{fmt}")
    data = load_image_folder(tmp_path, image_size=8)
    assert data.images.shape == (1, 3, 8, 8)


def _one_line(exc_info, *needles):
    text = str(exc_info.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text


def test_an_empty_class_folder_is_named(tmp_path):
    _write(tmp_path, classes=("a",), per_class=1)
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError) as info:
        load_image_folder(tmp_path)
    _one_line(info, str(tmp_path / "b"), "class folder has no images")


def test_a_zero_byte_image_is_named(tmp_path):
    _write(tmp_path, classes=("a",), per_class=1)
    (tmp_path / "a" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError) as info:
        load_image_folder(tmp_path, image_size=8)
    _one_line(info, str(tmp_path / "a" / "empty.jpg"), "empty file (0 bytes)", "--vitrobust-skip-bad-images")


def test_an_unreadable_image_is_named(tmp_path):
    _write(tmp_path, classes=("a",), per_class=1)
    (tmp_path / "a" / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError) as info:
        load_image_folder(tmp_path, image_size=8)
    _one_line(info, str(tmp_path / "a" / "junk.png"), "cannot read image")


def test_a_truncated_image_is_named(tmp_path):
    _write(tmp_path, classes=("a",), per_class=1, size=(64, 64))
    good = (tmp_path / "a" / "000.png").read_bytes()
    (tmp_path / "a" / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError) as info:
        load_image_folder(tmp_path, image_size=8)
    _one_line(info, "cut.png", "cannot read image")


def test_a_decompression_bomb_is_refused(tmp_path):
    # 20,000 x 20,000 pixels of 1-bit zeros: a few kB of PNG, 400 M pixels (PIL refuses > 2 x 89 M)
    (tmp_path / "a").mkdir()
    Image.new("1", (20_000, 20_000)).save(tmp_path / "a" / "bomb.png")
    assert (tmp_path / "a" / "bomb.png").stat().st_size < 1_000_000
    with pytest.raises(DataError) as info:
        load_image_folder(tmp_path, image_size=8)
    _one_line(info, "bomb.png", "decompression bomb")


def test_skip_bad_images_counts_and_names_what_it_skipped(tmp_path):
    _write(tmp_path, classes=("a", "b"), per_class=3)
    (tmp_path / "a" / "empty.jpg").write_bytes(b"")
    (tmp_path / "b" / "junk.png").write_bytes(b"junk")
    data = load_image_folder(tmp_path, image_size=8, skip_bad=True)
    assert len(data) == 6 == len(data.ids) == len(data.labels) == len(data.images)
    assert sorted(s.split(":")[0] for s in data.skipped) == ["a/empty.jpg", "b/junk.png"]
    assert "a/empty.jpg" not in data.ids


def test_skipping_every_image_is_still_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "junk.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="none of the 1 images selected could be read"):
        load_image_folder(tmp_path, image_size=8, skip_bad=True)


def test_a_training_split_is_lazy_and_batches_follow_the_order(tmp_path):
    _write(tmp_path / "train", per_class=3)
    train = open_train_split(str(tmp_path), image_size=8)
    assert isinstance(train, LazyFolder) and len(train) == 12 and train.num_classes == 4
    order = torch.tensor([11, 0, 5, 6, 1], device="cpu")
    batches = list(train.batches(order, 2))
    assert [len(labels) for _, labels in batches] == [2, 2, 1]
    labels = torch.cat([labels for _, labels in batches])
    assert labels.tolist() == [train.index.labels[i] for i in order.tolist()]
    first = batches[0][0][0]   # position 11: class d, file 002 -> colour 32
    assert round(float(first[0, 0, 0]) * 255) == 32


def test_a_folder_split_via_load_dataset_uses_the_split_subfolder(tmp_path):
    _write(tmp_path / "val", classes=("a", "b"), per_class=2)
    data = load_dataset(str(tmp_path), "test", limit=3, image_size=8)
    assert len(data) == 3 and data.name.endswith("val")
