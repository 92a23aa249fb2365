"""A demo product catalog made from Fashion-MNIST: images plus a products.csv with made-up but
plausible ids, brands, colours and prices (per-category price bands), from a fixed seed.

    shoplens data catalog --out catalog/ --count 5000 [--split train] [--seed 11]

Written into a temporary directory and renamed into place.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
from shoplens.errors import DataError, UsageError
from shoplens.internal.outputs import output_lock, publish_output_dir, remove_path, stage_output_dir
from shoplens.internal.progress import progress

__all__ = ["generate_catalog"]

PRICE_BANDS = {  # euros, per Fashion-MNIST class
    "T-shirt/top": (9, 39), "Trouser": (29, 99), "Pullover": (24, 89), "Dress": (29, 149),
    "Coat": (59, 299), "Sandal": (19, 79), "Shirt": (19, 69), "Sneaker": (39, 159),
    "Bag": (25, 249), "Ankle boot": (49, 199),
}  # fmt: skip
BRANDS = ("Northwind", "Lumen", "Alder & Co", "Kestrel", "Monsoon Lane", "Pico", "Verde", "Halvard")
MATERIALS = ("cotton", "wool", "denim", "leather", "linen", "polyester", "canvas", "suede")


def generate_catalog(
    out_dir: str | Path,
    *,
    count: int = 1000,
    split: str = "train",
    seed: int = 11,
    overwrite: bool = False,
    show_progress: bool = False,
    colours: bool = False,
) -> dict[str, Any]:
    """Write ``count`` products (images/ and products.csv) into ``out_dir``; returns a summary.

    With ``colours`` every product is painted in a palette colour (``shoplens.colour``) on a light
    background, as in a product photo, and ``products.csv`` gets that colour as its ``colour`` column.
    """
    x, y = load_fashion_mnist(split)
    if not 1 <= count <= len(x):
        raise UsageError(f"--count must be in 1..{len(x)} for the {split} split, got {count}")
    out = Path(out_dir)
    with output_lock(out):
        return _write_catalog(out, x, y, count, split, seed, overwrite, show_progress, colours)


def _painted(gray: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """The item painted in a random palette colour on a light, slightly uneven background."""
    from shoplens.colour import PALETTE
    from shoplens.data.colour_set import paint

    name = PALETTE[int(rng.integers(0, len(PALETTE)))]
    if name in ("black", "gray", "white"):
        level = {"black": 25.0, "gray": 120.0, "white": 245.0}[name]
        shade = 0.85 + 0.15 * gray[:, :, None].astype(np.float32) / 255
        bgra = np.dstack([np.full((*gray.shape, 3), level, np.float32) * shade,
                          np.clip(gray.astype(np.float32) * 10.0, 0, 255)])  # fmt: skip
    else:
        bgra = paint(gray, name, rng).astype(np.float32)
    side = 96  # big enough for the item's colour, small enough for a catalog of 60,000
    item = cv2.resize(bgra, (side, side), interpolation=cv2.INTER_LINEAR)
    bg = rng.uniform(200, 235) if name == "white" else rng.uniform(225, 250)
    alpha = item[:, :, 3:] / 255.0
    img = item[:, :, :3] * alpha + bg * (1 - alpha)
    return np.clip(img, 0, 255).astype(np.uint8), name


def _write_catalog(
    out: Path, x: np.ndarray, y: np.ndarray, count: int, split: str, seed: int, overwrite: bool,
    show_progress: bool, colours: bool,
) -> dict[str, Any]:  # fmt: skip
    tmp = stage_output_dir(out, overwrite=overwrite)
    rng = np.random.default_rng(seed)
    try:
        (tmp / "images").mkdir()
        with (tmp / "products.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "image", "category", "price", "brand", "material", "source_index",
                        *(["colour"] if colours else [])])  # fmt: skip
            with progress(show_progress, "writing catalog", count) as bar:
                for i in range(count):
                    label = FASHION_MNIST_LABELS[int(y[i])]
                    lo, hi = PRICE_BANDS[label]
                    price = round(float(rng.uniform(lo, hi)), 0) - 0.01
                    pid = f"SL-{100000 + int(rng.integers(0, 900000)):06d}-{i:05d}"
                    name = f"images/{i:06d}.png"
                    img, colour = _painted(x[i], rng) if colours else (x[i], "")
                    if not cv2.imwrite(str(tmp / name), img):
                        raise DataError(f"cannot write {tmp / name}")
                    w.writerow([pid, name, label, f"{price:.2f}", BRANDS[int(rng.integers(len(BRANDS)))],
                                MATERIALS[int(rng.integers(len(MATERIALS)))], f"{split}/{i}",
                                *([colour] if colours else [])])  # fmt: skip
                    bar.advance(1)
        publish_output_dir(tmp, out, command="data catalog")
    except BaseException:
        remove_path(tmp)
        raise
    return {"out": str(out), "products": count, "split": split, "seed": seed, "colours": colours}
