"""Outlier exposure for "not a product": does teaching the model what is *not* a product help?

    .venv/bin/python -m benchmarks.outlier_exposure [--epochs 2] [--out out/oe]

The reference model answers every frame with a product class, and the cheap signals measured by
``benchmarks.open_set`` turn away 8-84 % of non-products at 2 % of products. Outlier exposure
(Hendrycks et al., ICLR 2019) fine-tunes the classifier so that its softmax is flat on outliers:
cross-entropy to the uniform distribution on outlier images, next to the usual loss on products.
Then the plain top-1 score separates products from non-products.

No outlier dataset can be downloaded here, so the outliers are generated, from families that are
*not* the ones ``benchmarks.open_set`` evaluates on (text, pixel noise, linear gradients, filled
shapes, empty scenes): shuffled 7x7 tiles of a training item (product texture, no silhouette),
sinusoidal gratings, checkerboards, smooth random fields, and concentric rings; half of them
rendered into kiosk scenes as products are. Steps: fine-tune ``product_cnn.keras``, convert it
with the release recipe (int8 + embedding) and run ``benchmarks.open_set`` on the result.
Nothing here ships: the measured result decides whether the reference model is retrained this way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks import ROOT
from shoplens.internal.atomic import atomic_write_text

OE_WEIGHT = 0.5  # Hendrycks et al.'s lambda for vision
OUTLIERS_PER_BATCH = 32


def _jigsaw(rng: np.random.Generator, items: np.ndarray) -> np.ndarray:
    img = items[int(rng.integers(len(items)))]
    tiles = img.reshape(4, 7, 4, 7).transpose(0, 2, 1, 3).reshape(16, 7, 7)[rng.permutation(16)]
    return np.ascontiguousarray(tiles.reshape(4, 4, 7, 7).transpose(0, 2, 1, 3).reshape(28, 28))


def _grating(rng: np.random.Generator, _items: np.ndarray) -> np.ndarray:
    a, f, p = rng.uniform(0, np.pi), rng.uniform(0.1, 0.8), rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:64, 0:64]
    g = np.sin(f * (np.cos(a) * xx + np.sin(a) * yy) + p)
    lo, hi = sorted(rng.integers(0, 256, 2))
    return (lo + (g + 1) / 2 * (hi - lo)).astype(np.uint8)


def _checker(rng: np.random.Generator, _items: np.ndarray) -> np.ndarray:
    k = int(rng.integers(3, 16))
    yy, xx = np.mgrid[0:64, 0:64]
    lo, hi = rng.integers(0, 256, 2)
    return np.where(((yy // k) + (xx // k)) % 2 == 0, lo, hi).astype(np.uint8)


def _field(rng: np.random.Generator, _items: np.ndarray) -> np.ndarray:
    n = int(rng.integers(3, 9))
    small = rng.uniform(0, 255, (n, n)).astype(np.float32)
    return np.clip(cv2.resize(small, (64, 64), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def _rings(rng: np.random.Generator, _items: np.ndarray) -> np.ndarray:
    cy, cx = rng.uniform(0, 64, 2)
    yy, xx = np.mgrid[0:64, 0:64]
    r = np.hypot(yy - cy, xx - cx)
    g = np.sin(r * rng.uniform(0.2, 1.2))
    return ((g + 1) * 127.5).astype(np.uint8)


def _flat(rng: np.random.Generator, items: np.ndarray) -> np.ndarray:
    """A training item's silhouette filled with one flat gray: an outline without a product's texture."""
    img = items[int(rng.integers(len(items)))]
    return np.where(img > 20, np.uint8(rng.integers(40, 256)), np.uint8(0))


TRAIN_OUTLIERS = {"jigsaw": _jigsaw, "grating": _grating, "checker": _checker, "field": _field,
                  "rings": _rings, "flat": _flat}  # fmt: skip
DEFAULT_FAMILIES = ("jigsaw", "grating", "checker", "field", "rings")


def fine_tune(out: Path, epochs: int, families: tuple[str, ...], limit: int = 0) -> Path:
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    import keras

    sys.path.insert(0, str(ROOT / "sample_apps" / "reference_model"))
    from train import CONTRACT, KioskMix  # the reference model's own batches

    from shoplens.data.fashion_mnist import load_fashion_mnist
    from shoplens.data.kiosk import render_scene
    from shoplens.preprocess import Preprocessor

    x_all, y_all = load_fashion_mnist("train")
    x_train, y_train = x_all[:58000], y_all[:58000]
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    makers = [TRAIN_OUTLIERS[f] for f in families]

    class WithOutliers(KioskMix):  # type: ignore[misc]
        def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            x, y = super().__getitem__(idx)
            rng = np.random.default_rng([77, self.epoch, idx])
            pre = Preprocessor(CONTRACT, input_order="BGR")
            xo = np.empty((OUTLIERS_PER_BATCH, *x.shape[1:]), np.float32)
            for j in range(OUTLIERS_PER_BATCH):
                img = makers[int(rng.integers(len(makers)))](rng, x_train)
                if rng.random() < 0.5:
                    img = render_scene(np.ascontiguousarray(img), rng, size=(128, 128))
                pre(img, xo[j])
            t = np.zeros((len(y) + OUTLIERS_PER_BATCH, 10), np.float32)
            t[np.arange(len(y)), y] = 1.0
            t[len(y) :] = 0.1
            w = np.ones(len(t), np.float32)
            w[len(y) :] = OE_WEIGHT
            return np.concatenate([x, xo]), t, w

    model = keras.saving.load_model(ROOT / "sample_apps" / "reference_model" / "product_cnn.keras")
    data = WithOutliers(x_train, y_train, 128, 0.4, 5, workers=2)
    steps = epochs * math.ceil(len(x_train) / 128)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-4, steps)),
                  loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])  # fmt: skip
    model.fit(data, epochs=epochs, verbose=2)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "product_cnn_oe.keras"
    model.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.outlier_exposure")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N items (smoke runs)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "oe")
    ap.add_argument("--quick", action="store_true", help="the open-set evaluation's quick sizes")
    ap.add_argument("--family", action="append", choices=sorted(TRAIN_OUTLIERS),
                    help=f"outlier family to train on (repeatable; default: {', '.join(DEFAULT_FAMILIES)})")
    ap.add_argument("--summarise", action="store_true", help="only write the results file from --out")
    args = ap.parse_args(argv)
    families = tuple(args.family or DEFAULT_FAMILIES)
    if args.summarise:
        return summarise(args.out, families, args.epochs)
    t0 = time.time()
    keras_path = fine_tune(args.out, args.epochs, families, args.limit)
    print(f"fine-tuned in {time.time() - t0:.0f} s", flush=True)
    release = args.out / "release"
    for name in ("labels.txt", "contract.json"):  # the convert step reads them beside the model
        shutil.copy(ROOT / "sample_apps" / "reference_model" / name, args.out / name)
    shoplens = str(Path(sys.executable).parent / "shoplens")
    subprocess.run([shoplens, "convert", str(keras_path), "--out", str(release), "--recipe", "int8",
                    "--embedding", "auto", "--calib-data", "fashion-mnist:train:300",
                    "--eval-data", "fashion-mnist:test:2000", "--max-drop", "1.0", "--overwrite"],
                   check=True)  # fmt: skip
    from benchmarks import open_set

    res = ["--release", str(release), "--out", str(args.out / "open-set-oe.json")]
    rc = open_set.main(res + (["--quick"] if args.quick else []))
    return rc or (0 if args.quick or args.limit else summarise(args.out, families, args.epochs))


def summarise(out: Path, families: tuple[str, ...], epochs: int) -> int:
    """``benchmarks/results/outlier-exposure-DATE[-families].json``: the training set-up, the
    accuracy of the fine-tuned model and its open-set figures, next to the reference model's."""
    from benchmarks import open_set

    report = json.loads((out / "release" / "report.json").read_text())["accuracy"]
    oe = json.loads((out / "open-set-oe.json").read_text())
    base = sorted((ROOT / "benchmarks" / "results").glob("open-set-20*.json"))[-1]
    ref = json.loads(base.read_text())
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "train_families": list(families),
        "evaluated_families": list(oe["non_products"]),
        "epochs": epochs, "oe_weight": OE_WEIGHT, "outliers_per_batch": OUTLIERS_PER_BATCH,
        "top1_fashion_mnist_test_2000": {"source": report["source_top1"], "int8": report["converted_top1"]},
        "reference_top1_fashion_mnist_test_2000": json.loads((open_set.RELEASE / "report.json").read_text())
        ["accuracy"]["source_top1"],
        "fine_tuned": oe,
        "reference": {"file": base.name, "products_wrongly_rejected": ref["products_wrongly_rejected"],
                      "non_products": ref["non_products"], "mahalanobis": ref["mahalanobis"]},
    }  # fmt: skip
    tag = "" if families == DEFAULT_FAMILIES else "-" + "-".join(families)
    path = ROOT / "benchmarks" / "results" / f"outlier-exposure-{doc['date']}{tag}.json"
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n", overwrite=True)
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
