"""A large catalog of real embeddings for the search benchmarks (nothing is downloaded).

Each item is a Fashion-MNIST product (train and test splits) rendered by the kiosk scene generator
with its own pose, scale, light, background and noise (frames of 160x120, cheap to render; the
model sees a 96x96 crop of them either way), then embedded by the reference embedding model
through the SDK. Neighbours are therefore meaningful: the same product under other views, then the
same kind of product. Cached under ``out/bench/`` with the embedding model's digest, since
``N = 1,000,000`` takes a while (CI uses a slice).

    .venv/bin/python -m benchmarks.search_data --n 1000000     # the bench's reference embedding model
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import ROOT

FRAME = (160, 120)


def build(model: Path, n: int, out: Path, *, seed: int = 7, show_progress: bool = True) -> tuple[Path, Path]:
    """(embeddings.npy float32 (n, D), categories.npy int16 (n,)); made once and cached."""
    from shoplens import Embedder
    from shoplens.data.fashion_mnist import load_fashion_mnist
    from shoplens.data.kiosk import KioskConfig, render_scene
    from shoplens.internal.atomic import sha256_file
    from shoplens.internal.progress import progress

    key = sha256_file(model)[:12]
    emb_path = out / f"search-{n}-s{seed}-{key}-emb.npy"
    cat_path = out / f"search-{n}-s{seed}-{key}-cat.npy"
    if emb_path.is_file() and cat_path.is_file():
        return emb_path, cat_path
    out.mkdir(parents=True, exist_ok=True)
    xa, ya = load_fashion_mnist("train")
    xb, yb = load_fashion_mnist("test")
    products = np.concatenate([xa, xb])
    labels = np.concatenate([ya, yb]).astype(np.int16)
    rng = np.random.default_rng(seed)
    cfg = KioskConfig(width=FRAME[0], height=FRAME[1], bad_fraction=0.0)
    with Embedder.create_from_model_path(model) as emb:
        vecs = np.lib.format.open_memmap(out / f".{emb_path.name}.partial", mode="w+", dtype=np.float32,
                                         shape=(n, emb.dim))  # fmt: skip
        cats = np.empty(n, np.int16)
        pre = emb.preprocessor
        batch = 256
        buf = np.empty((batch, *pre.out_shape), pre.out_dtype)
        t0 = time.perf_counter()
        with progress(show_progress, f"embedding {n:,} catalog views", n) as bar:
            for s in range(0, n, batch):
                m = min(batch, n - s)
                idx = rng.integers(0, len(products), m)
                for j in range(m):
                    frame = render_scene(products[idx[j]], rng, config=cfg, encode=False)[0]
                    pre(frame, buf[j])
                vecs[s : s + m] = emb.embed_preprocessed(buf[:m])
                cats[s : s + m] = labels[idx]
                bar.advance(m)
        vecs.flush()
        del vecs
    (out / f".{emb_path.name}.partial").rename(emb_path)
    np.save(cat_path, cats)
    print(f"embedded {n:,} views in {time.perf_counter() - t0:.0f} s")
    return emb_path, cat_path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="embedding.tflite (default: the bench's reference one)")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    a = ap.parse_args()
    if a.model is None:
        from benchmarks.search import build_embedding_model

        a.model = build_embedding_model(a.out)[0]
    print(build(a.model, a.n, a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
