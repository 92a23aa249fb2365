from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from shoplens.data import KioskConfig, generate_kiosk, open_dataset, render_scene
from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS
from shoplens.errors import DataError, OutputExistsError, UsageError


def _products(fmnist_test: tuple[np.ndarray, np.ndarray], n: int = 50) -> tuple[list[np.ndarray], list[int]]:
    x, y = fmnist_test
    return list(x[:n]), y[:n].tolist()


def _digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file() and p.name != "meta.json":
            h.update(p.relative_to(d).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_frames_are_reproducible_and_labelled(tmp_path: Path, fmnist_test) -> None:
    products, labels = _products(fmnist_test)
    cfg = KioskConfig(bad_fraction=0.3)
    a = generate_kiosk(
        tmp_path / "a", products, labels, FASHION_MNIST_LABELS, n_frames=20, seed=7, config=cfg
    )
    generate_kiosk(tmp_path / "b", products, labels, FASHION_MNIST_LABELS, n_frames=20, seed=7, config=cfg)
    generate_kiosk(tmp_path / "c", products, labels, FASHION_MNIST_LABELS, n_frames=20, seed=8, config=cfg)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    frame = cv2.imread(str(tmp_path / "a" / a[0].file))
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    with (tmp_path / "a" / "ground_truth.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20
    assert {r["bad_reason"] for r in rows} <= {"", "blur", "dark", "overexposed"}
    assert any(r["bad_reason"] for r in rows) and any(not r["bad_reason"] for r in rows)
    for r in rows:
        assert FASHION_MNIST_LABELS[int(r["label"])] == r["label_name"]
        assert labels[int(r["source_index"])] == int(r["label"])


def test_bad_frames_are_measurably_bad(fmnist_test) -> None:
    x, _ = fmnist_test
    lum = {"good": [], "dark": [], "overexposed": []}
    sharp = {"good": [], "blur": []}
    for i in range(12):
        for bad in (None, "dark", "overexposed", "blur"):
            f = render_scene(x[i], np.random.default_rng(i), bad=bad)
            g = cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)
            key = bad or "good"
            if key in lum:
                lum[key].append(g.mean())
            if key in sharp:
                sharp[key].append(
                    cv2.Laplacian(cv2.resize(g, (160, 120), interpolation=cv2.INTER_AREA), cv2.CV_32F).var()
                )
    assert max(lum["dark"]) < min(lum["good"])
    assert min(lum["overexposed"]) > np.median(lum["good"])
    assert max(sharp["blur"]) < min(sharp["good"])


def test_product_fills_the_centre_crop() -> None:
    """A square product covers 35-90 % of the centre-crop side: compare with an empty product."""
    cfg = KioskConfig(
        max_rotation_deg=0,
        noise_sigma=(0, 0),
        blur_sigma=(0, 0),
        motion_blur_prob=0,
        jpeg_quality=(100, 100),
        contrast=(1.0, 1.0),
    )
    square = np.full((28, 28), 255, np.uint8)
    empty = np.zeros((28, 28), np.uint8)
    sides = []
    for i in range(20):
        f = render_scene(square, np.random.default_rng(i), config=cfg, size=(300, 200), tint=False)
        g = render_scene(empty, np.random.default_rng(i), config=cfg, size=(300, 200), tint=False)
        ys, xs = np.nonzero(np.abs(f.astype(int) - g.astype(int)).max(axis=2) > 20)
        sides.append(max(xs.max() - xs.min(), ys.max() - ys.min()) + 1)
    assert min(sides) >= 0.33 * 200 and max(sides) <= 0.92 * 200
    assert max(sides) - min(sides) > 0.3 * 200  # the scale really varies


def test_video_mode_and_dataset_reader(tmp_path: Path, fmnist_test) -> None:
    products, labels = _products(fmnist_test)
    out = tmp_path / "v"
    infos = generate_kiosk(
        out,
        products,
        labels,
        FASHION_MNIST_LABELS,
        n_frames=24,
        seed=1,
        video=True,
        segment_frames=8,
        config=KioskConfig(bad_fraction=0.5),
    )
    cap = cv2.VideoCapture(str(out / "kiosk.avi"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 24
    # a segment shares its product and its bad reason
    for s in range(3):
        seg = [f for f in infos if f.segment == s]
        assert len({f.source_index for f in seg}) == 1 and len({f.bad_reason for f in seg}) == 1
    ds = open_dataset(f"kiosk:{out}")
    got = [(b.labels.tolist(), b.images[0].shape) for b in ds.batches(10)]
    assert sum(len(lbls) for lbls, _ in got) == 24
    assert got[0][1] == (480, 640, 3)
    good = open_dataset(f"kiosk:{out}:good")
    assert len(good) == sum(1 for f in infos if not f.bad_reason)


def test_refuses_to_overwrite_and_reader_refuses_interrupted_dir(tmp_path: Path, fmnist_test) -> None:
    products, labels = _products(fmnist_test)
    out = tmp_path / "k"
    generate_kiosk(out, products, labels, FASHION_MNIST_LABELS, n_frames=3)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        generate_kiosk(out, products, labels, FASHION_MNIST_LABELS, n_frames=3)
    generate_kiosk(out, products, labels, FASHION_MNIST_LABELS, n_frames=2, overwrite=True)
    assert len(open_dataset(f"kiosk:{out}")) == 2
    (out / "ground_truth.csv").unlink()
    with pytest.raises(DataError, match="interrupted"):
        open_dataset(f"kiosk:{out}")


def test_config_validation() -> None:
    with pytest.raises(UsageError, match="fill"):
        KioskConfig(fill=(0.9, 0.3))
    with pytest.raises(UsageError, match="bad_fraction"):
        KioskConfig(bad_fraction=1.5)
