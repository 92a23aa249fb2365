from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from shoplens.data import FolderDataset, open_dataset, parse_data_spec
from shoplens.data.spec import DataSpec
from shoplens.errors import DataError


@pytest.fixture()
def image_folder(tmp_path: Path, fmnist_test: tuple[np.ndarray, np.ndarray]) -> Path:
    """Real Fashion-MNIST images written as jpg/png/bmp/webp into class folders."""
    x, y = fmnist_test
    root = tmp_path / "shop"
    exts = [".png", ".jpg", ".bmp", ".webp"]
    names = ["coat", "bag", "sneaker"]
    classes = {"coat": 4, "bag": 8, "sneaker": 7}
    for name in names:
        (root / name).mkdir(parents=True)
        idx = np.flatnonzero(y == classes[name])[:6]
        for j, i in enumerate(idx):
            cv2.imwrite(str(root / name / f"{i}{exts[j % 4]}"), x[i])
    return root


def test_folder_labels_from_sorted_names(image_folder: Path) -> None:
    ds = open_dataset(str(image_folder))
    assert isinstance(ds, FolderDataset)
    assert ds.label_names == ("bag", "coat", "sneaker")
    assert len(ds) == 18
    seen = [(b.labels.tolist(), len(b.images)) for b in ds.batches(4)]
    assert all(n <= 4 for _, n in seen)
    assert sum(n for _, n in seen) == 18
    first = next(iter(ds))
    assert first[0].dtype == np.uint8 and first[0].shape[:2] == (28, 28)


def test_folder_labels_from_labels_txt(image_folder: Path) -> None:
    (image_folder / "labels.txt").write_text("sneaker\ncoat\nbag\nhat\n")
    ds = open_dataset(str(image_folder))
    assert ds.label_names == ("sneaker", "coat", "bag", "hat")
    labels = np.concatenate([b.labels for b in ds.batches(100)])
    assert sorted(set(labels.tolist())) == [0, 1, 2]


def test_folder_not_in_labels_txt(image_folder: Path) -> None:
    (image_folder / "labels.txt").write_text("coat\nbag\n")
    with pytest.raises(DataError, match="are not among"):
        open_dataset(str(image_folder))


def test_non_image_and_unreadable_files_are_skipped_and_counted(
    image_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (image_folder / "bag" / "notes.txt").write_text("not an image")
    (image_folder / "bag" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (image_folder / "coat" / "empty.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="shoplens.data"):
        ds = open_dataset(str(image_folder))
        n = sum(len(b) for b in ds.batches(8))
    assert n == 18
    assert ds.skipped == 3  # 1 non-image + 2 unreadable
    text = caplog.text
    assert "skipped 1 non-image" in text and "skipped 2 unreadable" in text


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        open_dataset(str(tmp_path / "empty"))


def test_all_images_unreadable(tmp_path: Path) -> None:
    (tmp_path / "c" / "a").mkdir(parents=True)
    (tmp_path / "c" / "a" / "x.png").write_bytes(b"nope")
    ds = open_dataset(str(tmp_path / "c"))
    with pytest.raises(DataError, match="none of its 1 images could be read"):
        list(ds.batches())


def test_missing_folder_and_file_instead_of_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(str(tmp_path / "nope"))
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(DataError, match="not a directory"):
        open_dataset(str(f))


def test_folder_streams_lazily(image_folder: Path) -> None:
    """Images are read batch by batch: a file removed after the first batch is simply skipped."""
    ds = open_dataset(str(image_folder))
    it = ds.batches(2)
    next(it)
    last = ds.files[-1][0]
    last.unlink()
    rest = sum(len(b) for b in it)
    assert rest == 18 - 2 - 1
    assert ds.skipped == 1


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("fashion-mnist:train", DataSpec("fashion-mnist", "train", None)),
        ("fashion-mnist:test:500", DataSpec("fashion-mnist", "test", 500)),
        ("kiosk:/tmp/k", DataSpec("kiosk", "all", None, Path("/tmp/k"))),
        ("kiosk:/tmp/k:good", DataSpec("kiosk", "good", None, Path("/tmp/k"))),
        ("/data/shop", DataSpec("folder", "", None, Path("/data/shop"))),
    ],
)
def test_parse_spec(spec: str, expected: DataSpec) -> None:
    assert parse_data_spec(spec) == expected


@pytest.mark.parametrize(
    "spec, msg",
    [
        ("", "empty data spec"),
        ("fashion-mnist:valid", "expected fashion-mnist"),
        ("fashion-mnist:test:abc", "must be an integer"),
        ("fashion-mnist:test:0", "must be >= 1"),
        ("kiosk:", "expected kiosk:DIR"),
    ],
)
def test_parse_spec_errors(spec: str, msg: str) -> None:
    with pytest.raises(DataError, match=msg):
        parse_data_spec(spec)


def test_fashion_mnist_spec_limit_and_ids() -> None:
    ds = open_dataset("fashion-mnist:test:300")
    batches = list(ds.batches(128))
    assert [len(b) for b in batches] == [128, 128, 44]
    assert batches[0].ids[0] == "test/0" and batches[-1].ids[-1] == "test/299"
    with pytest.raises(DataError, match="has only 10000"):
        open_dataset("fashion-mnist:test:10001")
