"""Data specs: one string that names data, parsed in exactly one place.

=================================  ====================================================
spec                               meaning
=================================  ====================================================
``fashion-mnist:train[:N]``        the first N images of the Fashion-MNIST training split
``fashion-mnist:test[:N]``         the first N images of the test split
``kiosk:DIR[:all|good|bad]``       frames made by ``shoplens data kiosk`` with their CSV
``DIR``                            an image folder, one subfolder per class
=================================  ====================================================
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shoplens.data.datasets import ArrayDataset, Dataset, FolderDataset, KioskDataset
from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
from shoplens.errors import DataError

__all__ = ["DataSpec", "open_dataset", "parse_data_spec"]

SPEC_HELP = (
    "data spec: fashion-mnist:train[:N], fashion-mnist:test[:N], kiosk:DIR[:good|bad|all], "
    "or an image folder with one subfolder per class"
)


@dataclass(frozen=True)
class DataSpec:
    kind: str  # "fashion-mnist" | "kiosk" | "folder"
    split: str = ""  # fashion-mnist split, or kiosk subset
    limit: int | None = None
    path: Path | None = None

    def __str__(self) -> str:
        if self.kind == "fashion-mnist":
            return f"fashion-mnist:{self.split}" + (f":{self.limit}" if self.limit is not None else "")
        if self.kind == "kiosk":
            return f"kiosk:{self.path}" + (f":{self.split}" if self.split != "all" else "")
        return str(self.path)


def parse_data_spec(spec: str | os.PathLike[str] | DataSpec) -> DataSpec:
    """Parse a data spec string; raise DataError with the grammar when it is malformed."""
    if isinstance(spec, DataSpec):
        return spec
    s = os.fspath(spec).strip()
    if not s:
        raise DataError(f"empty data spec; expected a {SPEC_HELP}")
    if s.startswith("fashion-mnist:") or s == "fashion-mnist":
        parts = s.split(":")
        if len(parts) not in (2, 3) or parts[1] not in ("train", "test"):
            raise DataError(
                f"bad data spec {s!r}; expected fashion-mnist:train[:N] or fashion-mnist:test[:N]"
            )
        limit = None
        if len(parts) == 3:
            try:
                limit = int(parts[2])
            except ValueError:
                raise DataError(f"bad data spec {s!r}: N must be an integer, got {parts[2]!r}") from None
            if limit < 1:
                raise DataError(f"bad data spec {s!r}: N must be >= 1")
        return DataSpec("fashion-mnist", parts[1], limit)
    if s.startswith("kiosk:"):
        rest = s[len("kiosk:") :]
        subset = "all"
        head, sep, tail = rest.rpartition(":")
        if sep and tail in ("all", "good", "bad"):
            rest, subset = head, tail
        if not rest:
            raise DataError(f"bad data spec {s!r}; expected kiosk:DIR[:good|bad|all]")
        return DataSpec("kiosk", subset, None, Path(rest))
    return DataSpec("folder", "", None, Path(s))


def open_dataset(
    spec: str | os.PathLike[str] | DataSpec,
    *,
    labels: Sequence[str] | None = None,
    fashion_mnist_dir: str | None = None,
    every_class: bool = False,
) -> Dataset:
    """Open the dataset a spec names.

    Args:
      spec: a data spec (see the module docstring).
      labels: the labels of the model the data is for: an image folder's class folders map to them
        by name (a subset is fine; an unknown folder is an error that lists them).
      every_class: the data must hold images of every class in ``labels`` (training data: a
        model fine-tuned on a few of its classes forgets the others).

    Raises:
      DataError: anything missing, malformed, or not matching ``labels``.
    """
    opened = _open(parse_data_spec(spec), labels, fashion_mnist_dir)
    if every_class:
        names = tuple(labels) if labels is not None else opened.label_names
        present = set(opened.class_ids().tolist())
        missing = [n for i, n in enumerate(names) if i not in present]
        if missing:
            raise DataError(
                f"{spec} holds images of {len(names) - len(missing)} of the model's {len(names)} classes "
                f"(none of: {', '.join(missing)}); fine-tuning on it would make the model forget the "
                "others: give images of every class"
            )
    return opened


def _open(ds: DataSpec, labels: Sequence[str] | None, fashion_mnist_dir: str | None) -> Dataset:
    if ds.kind == "fashion-mnist":
        images, ys = load_fashion_mnist(ds.split, fashion_mnist_dir)
        if ds.limit is not None:
            if ds.limit > len(images):
                raise DataError(f"{ds}: the {ds.split} split has only {len(images)} images")
            images, ys = images[: ds.limit], ys[: ds.limit]
        return ArrayDataset(
            name=str(ds),
            label_names=FASHION_MNIST_LABELS,
            images=images,
            labels=ys.astype("int64"),
            id_prefix=f"{ds.split}/",
        )
    if ds.path is None:
        raise DataError(f"data spec {ds} names no path")
    if ds.kind == "kiosk":
        return KioskDataset.open(ds.path, ds.split)
    return FolderDataset.open(ds.path, label_names=labels)
