from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import FMNIST_DIR
from shoplens.data import fashion_mnist as fm
from shoplens.errors import DataError


def _copy_dataset(dst: Path) -> Path:
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        shutil.copy(FMNIST_DIR / name, dst / name)
    return dst


def _load_fresh(split: str, directory: Path) -> tuple[np.ndarray, np.ndarray]:
    fm._load.cache_clear()
    return fm.load_fashion_mnist(split, directory)


def test_reads_the_debian_package() -> None:
    x, y = fm.load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,)
    assert np.bincount(y).tolist() == [1000] * 10  # the test split is balanced
    xt, yt = fm.load_fashion_mnist("train")
    assert xt.shape == (60000, 28, 28) and np.bincount(yt).tolist() == [6000] * 10
    assert not x.flags.writeable  # cached arrays cannot be changed by a caller


def test_env_var_and_explicit_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _copy_dataset(tmp_path)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(d))
    assert fm.find_fashion_mnist() == d
    assert fm.find_fashion_mnist(d) == d


def test_missing_files_name_the_package(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fm.load_fashion_mnist("test", tmp_path)


def test_unknown_split() -> None:
    with pytest.raises(DataError, match="unknown Fashion-MNIST split"):
        fm.load_fashion_mnist("valid")


def test_bad_magic_number(tmp_path: Path) -> None:
    d = _copy_dataset(tmp_path)
    raw = gzip.decompress((d / "t10k-images-idx3-ubyte.gz").read_bytes())
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(struct.pack(">I", 0x0801) + raw[4:]))
    with pytest.raises(DataError, match="magic number"):
        _load_fresh("test", d)


def test_truncated_gzip(tmp_path: Path) -> None:
    d = _copy_dataset(tmp_path)
    p = d / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:100_000])
    with pytest.raises(DataError, match="corrupt or truncated"):
        _load_fresh("test", d)


def test_truncated_payload_in_valid_gzip(tmp_path: Path) -> None:
    d = _copy_dataset(tmp_path)
    p = d / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DataError, match="declares"):
        _load_fresh("test", d)


def test_not_gzip_at_all(tmp_path: Path) -> None:
    d = _copy_dataset(tmp_path)
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(b"this is not a gzip file")
    with pytest.raises(DataError, match="corrupt or truncated"):
        _load_fresh("test", d)
