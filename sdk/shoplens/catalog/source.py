"""Catalog sources: an image folder (one subfolder per category) or a products CSV.

A CSV has ``id,image,category,price`` and any other columns as free-form attributes (``brand``,
``material``, ...); image paths are relative to the CSV. Every row is checked before anything is
embedded, so a bad line 602 fails in seconds, not after an hour of embedding.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoplens.data.datasets import IMAGE_EXTENSIONS
from shoplens.errors import DataError
from shoplens.internal.atomic import sha256_file

__all__ = ["BASE_COLUMNS", "CatalogSource", "Product", "SearchHit", "read_catalog"]

BASE_COLUMNS = ("id", "image", "category", "price")


@dataclass(frozen=True)
class Product:
    id: str
    image: str
    category: str = ""
    price: float | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "image": self.image, "category": self.category, "price": self.price,
                "attributes": dict(self.attributes)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Product:
        return cls(str(d["id"]), str(d["image"]), str(d.get("category", "")), d.get("price"),
                   dict(d.get("attributes", {})))  # fmt: skip


@dataclass(frozen=True)
class SearchHit:
    """One search result: the product, its cosine similarity to the query, and its row in the index
    (``index.product(row)``, e.g. for a thumbnail)."""

    product: Product
    score: float
    row: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {**self.product.to_dict(), "score": round(self.score, 6)}


# -- catalog sources --------------------------------------------------------------------------
@dataclass
class CatalogSource:
    path: Path
    kind: str  # "folder" | "csv"
    count: int
    fingerprint: str  # detects a catalog that changed between a build and its resume

    def rows(self) -> Iterator[Product]:
        if self.kind == "folder":
            for p in _folder_files(self.path):
                rel = p.relative_to(self.path)
                yield Product(str(rel.with_suffix("")), str(p), rel.parts[0])
            return
        with self.path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            for n, r in enumerate(reader, start=2):
                pid = (r.get("id") or "").strip()
                img = (r.get("image") or "").strip()
                if not pid or not img:
                    raise DataError(f"{self.path} line {n}: 'id' and 'image' must not be empty")
                price_s = (r.get("price") or "").strip()
                try:
                    price = float(price_s) if price_s else None
                except ValueError:
                    raise DataError(f"{self.path} line {n}: price {price_s!r} is not a number") from None
                attrs = {
                    k: v for k, v in r.items() if k not in BASE_COLUMNS and k is not None and v is not None
                }
                ip = Path(img)
                yield Product(pid, str(ip if ip.is_absolute() else self.path.parent / ip),
                              (r.get("category") or "").strip(), price, attrs)  # fmt: skip


def _folder_files(root: Path) -> list[Path]:
    return sorted(
        p for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
        for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )  # fmt: skip


def read_catalog(source: str | Path) -> CatalogSource:
    """Open a catalog (image folder or CSV); DataError when missing, malformed or empty."""
    p = Path(source)
    if not p.exists():
        raise DataError(f"catalog {p} does not exist")
    if p.is_dir():
        files = _folder_files(p)
        if not files:
            raise DataError(f"catalog folder {p} holds no images (expected one subfolder per category)")
        return CatalogSource(p, "folder", len(files), f"folder:{len(files)}:{files[-1].name}")
    if p.suffix.lower() != ".csv":
        raise DataError(f"catalog {p} must be an image folder or a .csv file")
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            header = csv.DictReader(fh).fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read catalog {p}: {exc}") from None
    missing = [c for c in ("id", "image") if c not in header]
    if missing:
        raise DataError(
            f"catalog {p} lacks the column(s) {', '.join(missing)} (needs id,image[,category,price,...])"
        )
    src = CatalogSource(p, "csv", 0, f"csv:{sha256_file(p)}")
    seen: dict[str, int] = {}
    count = 0
    try:  # every row is checked before anything is embedded: a bad line 602 fails in seconds
        for n, prod in enumerate(src.rows(), start=2):
            if prod.id in seen:
                raise DataError(
                    f"{p} line {n}: product id {prod.id!r} repeats line {seen[prod.id]}; ids must be unique"
                )
            seen[prod.id] = n
            count += 1
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read catalog {p}: {exc}") from None
    if count == 0:
        raise DataError(f"catalog {p} lists no products")
    return CatalogSource(p, "csv", count, src.fingerprint)
