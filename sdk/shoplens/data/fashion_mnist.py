"""Fashion-MNIST, read from the idx ``.gz`` files of Debian's ``dataset-fashion-mnist``.

Lookup order: an explicit directory, ``$FASHION_MNIST_DIR``, ``/usr/share/datasets/fashion-mnist``.
Nothing is ever downloaded. Magic numbers, dimensions and sizes are checked, so a corrupt or
truncated file gives a :class:`DataError` rather than a numpy crash.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from shoplens.errors import DataError

__all__ = [
    "DEBIAN_DIR",
    "FASHION_MNIST_LABELS",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "read_idx",
]

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "install it with: apt-get install dataset-fashion-mnist (or set FASHION_MNIST_DIR)"

FASHION_MNIST_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension


def find_fashion_mnist(directory: str | os.PathLike[str] | None = None) -> Path:
    """Return the directory holding the four idx files, or raise DataError naming the fix."""
    candidates: list[Path] = []
    if directory is not None:
        candidates.append(Path(directory))
    elif os.environ.get("FASHION_MNIST_DIR"):
        candidates.append(Path(os.environ["FASHION_MNIST_DIR"]))
    else:
        candidates.append(DEBIAN_DIR)
    for d in candidates:
        if all((d / f).is_file() for pair in _FILES.values() for f in pair):
            return d
    where = ", ".join(str(d) for d in candidates)
    raise DataError(f"Fashion-MNIST files not found in {where}; {INSTALL_HINT}")


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read one gzip-compressed idx file, checking its magic number and size."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; {INSTALL_HINT}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is corrupt or truncated ({exc}); reinstall dataset-fashion-mnist") from None
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an idx file ({len(raw)} bytes)")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise DataError(f"{path} has magic number {magic:#010x}, expected {expected_magic:#010x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} data bytes but its header {dims} declares {expected}; "
            "the file is corrupt or truncated"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


@functools.lru_cache(maxsize=4)
def _load(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    d = Path(directory)
    img_name, lbl_name = _FILES[split]
    images = read_idx(d / img_name, _IMAGES_MAGIC)
    labels = read_idx(d / lbl_name, _LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels; "
            "the files are mismatched"
        )
    if images.shape[1:] != (28, 28):
        raise DataError(f"Fashion-MNIST {split}: images are {images.shape[1:]}, expected (28, 28)")
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_LABELS):
        raise DataError(f"Fashion-MNIST {split}: label {int(labels.max())} is out of range 0..9")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_fashion_mnist(
    split: str = "train", directory: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (N, 28, 28), labels uint8 (N,)) for ``split`` in {'train', 'test'}.

    Arrays are read-only and cached per process.
    """
    if split not in _FILES:
        raise DataError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    d = find_fashion_mnist(directory)
    return _load(str(d.resolve()), split)
