import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from vitrobust import defaults
from vitrobust.data import DataError, load_dataset, load_image_folder
from vitrobust.errors import VitrobustError


def test_digits_splits_are_fixed_disjoint_and_in_range():
    splits = {s: load_dataset("digits", s) for s in ("train", "val", "test")}
    assert sum(len(d) for d in splits.values()) == 1797
    assert (len(splits["val"]), len(splits["test"])) == (250, 450)
    for d in splits.values():
        assert d.images.shape[1:] == (3, 32, 32)
        assert 0.0 <= d.images.min() and d.images.max() <= 1.0
    keys = {s: {bytes(x.numpy().tobytes()) for x in d.images} for s, d in splits.items()}
    assert not keys["test"] & keys["val"] and not keys["test"] & keys["train"]
    assert load_dataset("digits", "test").fingerprint == splits["test"].fingerprint


def test_all_ten_classes_in_test_split():
    assert set(load_dataset("digits", "test").labels.tolist()) == set(range(10))


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=0, max_value=500))
def test_limit_takes_a_prefix(n):
    full = load_dataset("synthetic", "test")
    part = full.limit(n)
    assert len(part) == min(n, len(full))
    assert torch.equal(part.images, full.images[: len(part)])


def test_unknown_split_is_one_line_error():
    with pytest.raises(DataError, match="unknown split 'dev'") as info:
        load_dataset("digits", "dev")
    assert isinstance(info.value, VitrobustError) and "\n" not in str(info.value)


def test_defaults_are_the_runs_defaults():
    data = load_dataset()
    assert (defaults.DATA_SOURCE, defaults.SPLIT) == ("digits", "test")
    assert data.name == "digits/test" and data.fingerprint == load_dataset("digits", "test").fingerprint


def _write_folder(root, classes=("cat", "dog"), per_class=3):
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            array = np.full((40, 50, 3), 40 * c + i, dtype=np.uint8)
            Image.fromarray(array).save(root / cls / f"{i}.png")


def test_image_folder_reads_classes_in_sorted_order(tmp_path):
    _write_folder(tmp_path)
    data = load_image_folder(tmp_path, image_size=16)
    assert data.images.shape == (6, 3, 16, 16)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.num_classes == 2
    assert abs(data.images[3].mean().item() - 40 / 255) < 1e-3


def test_image_folder_prefers_split_subfolder(tmp_path):
    _write_folder(tmp_path / "val", per_class=1)
    assert len(load_dataset(str(tmp_path), "test", image_size=8)) == 2


def test_bad_path_names_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="nope: no such data folder"):
        load_dataset(str(missing))


def test_empty_folder_names_the_path(tmp_path):
    (tmp_path / "cls").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path}.*no images"):
        load_image_folder(tmp_path)


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png: cannot read image"):
        load_image_folder(tmp_path)
