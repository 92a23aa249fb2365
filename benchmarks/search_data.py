"""A large catalog of real embeddings for the search benchmarks (nothing is downloaded).

Each item is a Fashion-MNIST product (train and test splits) rendered by the kiosk scene generator
with its own pose, scale, light, background and noise (frames of 160x120, cheap to render; the
model sees a 96x96 crop of them either way), then embedded by the reference embedding model
through the SDK. Neighbours are therefore meaningful: the same product under other views, then the
same kind of product. Cached under ``out/bench/`` with the embedding model's digest, since
``N = 1,000,000`` takes a while (CI uses a slice). Blocks of 25,000 views, each with its own seed,
are rendered and embedded by one process a core.

    .venv/bin/python -m benchmarks.search_data --n 1000000     # the bench's reference embedding model
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks import ROOT

FRAME = (160, 120)


BLOCK = 25_000  # views per block: each block has its own seed, so the data do not depend on the workers


def _render_block(model: Path, n: int, seed: int, size: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Block ``block`` (of ``size`` views) of the catalog: its embeddings (m, D) and categories (m,)."""
    from shoplens import Embedder
    from shoplens.data.fashion_mnist import load_fashion_mnist
    from shoplens.data.kiosk import KioskConfig, render_scene

    if _DATA.get("products") is None:
        xa, ya = load_fashion_mnist("train")
        xb, yb = load_fashion_mnist("test")
        _DATA["products"] = np.concatenate([xa, xb])
        _DATA["labels"] = np.concatenate([ya, yb]).astype(np.int16)
    products, labels = _DATA["products"], _DATA["labels"]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block,)))
    cfg = KioskConfig(width=FRAME[0], height=FRAME[1], bad_fraction=0.0)
    m = min(size, n - block * size)
    idx = rng.integers(0, len(products), m)
    with Embedder.create_from_model_path(model) as emb:
        pre, batch = emb.preprocessor, 256
        buf = np.empty((batch, *pre.out_shape), pre.out_dtype)
        vecs = np.empty((m, emb.dim), np.float32)
        for s in range(0, m, batch):
            k = min(batch, m - s)
            for j in range(k):
                pre(render_scene(products[idx[s + j]], rng, config=cfg, encode=False)[0], buf[j])
            vecs[s : s + k] = emb.embed_preprocessed(buf[:k])
    return vecs, labels[idx]


_DATA: dict[str, np.ndarray | None] = {"products": None}


def build(
    model: Path, n: int, out: Path, *, seed: int = 7, show_progress: bool = True, workers: int = 0,
    block: int = BLOCK,
) -> tuple[Path, Path]:
    """(embeddings.npy float32 (n, D), categories.npy int16 (n,)); made once and cached.

    Blocks of ``block`` views are rendered and embedded by ``workers`` processes (default: one a
    core); every block has its own seed, so the data are the same whatever the number of workers.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from shoplens.internal.atomic import sha256_file
    from shoplens.internal.progress import progress

    key = sha256_file(model)[:12]
    emb_path = out / f"search-{n}-s{seed}-{key}-b{block}-emb.npy"
    cat_path = out / f"search-{n}-s{seed}-{key}-b{block}-cat.npy"
    if emb_path.is_file() and cat_path.is_file():
        return emb_path, cat_path
    out.mkdir(parents=True, exist_ok=True)
    blocks = -(-n // block)
    workers = min(blocks, workers or os.cpu_count() or 1)
    t0 = time.perf_counter()
    vecs, cats = None, np.empty(n, np.int16)
    partial = out / f".{emb_path.name}.partial"
    with progress(show_progress, f"embedding {n:,} catalog views", n) as bar:

        def keep(b: int, v: np.ndarray, c: np.ndarray) -> None:
            nonlocal vecs
            if vecs is None:
                vecs = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n, v.shape[1]))
            vecs[b * block : b * block + len(v)] = v
            cats[b * block : b * block + len(v)] = c
            bar.advance(len(v))

        try:
            if workers == 1:
                for b in range(blocks):
                    keep(b, *_render_block(model, n, seed, block, b))
            else:
                # spawned, not forked: the caller may hold TensorFlow's threads
                with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                    futs = {pool.submit(_render_block, model, n, seed, block, b): b for b in range(blocks)}
                    for f in as_completed(futs):  # written as each ends: no finished block waits in memory
                        keep(futs[f], *f.result())
        except BaseException:
            vecs = None
            partial.unlink(missing_ok=True)
            raise
    assert vecs is not None
    vecs.flush()
    del vecs
    partial.rename(emb_path)
    np.save(cat_path, cats)
    print(f"embedded {n:,} views in {time.perf_counter() - t0:.0f} s ({workers} processes)")
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
