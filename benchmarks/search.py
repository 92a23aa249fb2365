"""Visual search: retrieval quality on Fashion-MNIST and exact top-k latency at 100k items.

    .venv/bin/python -m benchmarks.search [--quick]     # about 3 minutes here (quick: 40 s)

* the embedding model: the reference model's pooling layer, L2-normalized, int8 (as
  ``shoplens convert --embedding auto`` writes it), with its float-vs-int8 cosine;
* the index: the Fashion-MNIST training split as a catalog (60,000 products; quick: 5,000);
* same-category precision@10 for test-split queries, clean images and kiosk frames;
* search latency: the index tiled to 100,000 items, k=10, one BLAS thread (a subprocess with
  ``OPENBLAS_NUM_THREADS=1``), p50/p95 over 1,000 queries, and embed + search end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import REF, ROOT, reference_key


def build_embedding_model(out: Path) -> tuple[Path, dict]:
    from shoplens.contract import PreprocessContract
    from shoplens.data.spec import open_dataset
    from shoplens_convert.embedding import build_embedding_model as build
    from shoplens_convert.embedding import embedding_drift
    from shoplens_convert.flatbuffer import compact_model
    from shoplens_convert.load import find_labels, load_keras_model
    from shoplens_convert.metadata import embed_shoplens_metadata, shoplens_metadata_dict
    from shoplens_convert.quantize import calibration_frames, quantize

    key = reference_key("embedding", 300)
    path = out / f"reference_embedding-{key}.tflite"
    info_path = out / f"reference_embedding-{key}.json"
    if path.exists() and info_path.exists():
        return path, json.loads(info_path.read_text())
    loaded = load_keras_model(REF / "product_cnn.keras")
    contract = PreprocessContract.load(REF / "contract.json")
    emb, layer = build(loaded.model)
    calib = calibration_frames(open_dataset("fashion-mnist:train:300"), contract, 300)
    raw = quantize(emb, "int8", calibration=calib, io_type="uint8")
    labels = find_labels(loaded.path, None, loaded.num_classes)
    meta = shoplens_metadata_dict(contract, labels, output="embedding", embedding_layer=layer)
    path.write_bytes(embed_shoplens_metadata(compact_model(raw), meta))
    drift = embedding_drift(emb, path.read_bytes(), open_dataset("fashion-mnist:test:2000"), contract)
    info_path.write_text(json.dumps(drift, indent=2))
    return path, drift


def precision_at_10(
    index, embedder, frames: list[np.ndarray], labels: np.ndarray, names: tuple[str, ...]
) -> float:
    hits = []
    for f, y in zip(frames, labels, strict=True):
        r = embedder.embed(f)
        res = index.search(r.embedding, 10)
        hits.append(np.mean([h.product.category == names[int(y)] for h in res]))
    return float(np.mean(hits))


LATENCY_SCRIPT = r"""
import json, sys, time
import numpy as np
from shoplens.catalog import CatalogIndex
idx = CatalogIndex.load(sys.argv[1])
n_target = int(sys.argv[2])
rng = np.random.default_rng(0)
base = idx.vectors
reps = -(-n_target // len(base))
big = np.concatenate([base] * reps)[:n_target]
big = big + rng.normal(0, 0.02, big.shape).astype(np.float32)
big /= np.linalg.norm(big, axis=1, keepdims=True)
idx.vectors = big.astype(np.float32)
idx.products = (idx.products * reps)[:n_target]
idx._set_categories()
qs = base[rng.choice(len(base), 1000)]
for q in qs[:20]:
    idx.search(q, 10)
t = []
for q in qs:
    t0 = time.perf_counter(); idx.search(q, 10); t.append((time.perf_counter() - t0) * 1e3)
tc = []
cat = idx.products[0].category
for q in qs[:300]:
    t0 = time.perf_counter(); idx.search(q, 10, category=cat); tc.append((time.perf_counter() - t0) * 1e3)
print(json.dumps({"items": len(idx.vectors), "dim": idx.dim, "p50_ms": float(np.percentile(t, 50)),
                  "p95_ms": float(np.percentile(t, 95)),
                  "filtered_p50_ms": float(np.percentile(tc, 50))}))
"""


def search_latency(index_dir: Path, n_items: int) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", LATENCY_SCRIPT, str(index_dir), str(n_items)],
                       capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def run(out: Path, quick: bool = False) -> dict:
    from shoplens.catalog import CatalogIndex, build_index
    from shoplens.data.catalog_gen import generate_catalog
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
    from shoplens.data.kiosk import render_scene
    from shoplens.embedder import Embedder

    out.mkdir(parents=True, exist_ok=True)
    model, drift = build_embedding_model(out)
    n_cat = 5000 if quick else 60000
    cat_dir = out / f"catalog_{n_cat}"
    if not (cat_dir / "products.csv").is_file():
        generate_catalog(cat_dir, count=n_cat, split="train", overwrite=True)
    idx_dir = out / f"index_{n_cat}-{model.stem}"  # built with this very embedding model
    t0 = time.perf_counter()
    if not (idx_dir / "manifest.json").is_file():
        build_index(cat_dir / "products.csv", model, idx_dir, overwrite=True)
    build_s = json.loads((idx_dir / "manifest.json").read_text())["build_seconds"]
    index = CatalogIndex.load(idx_dir, model=model)
    n_q = 200 if quick else 1000
    x, y = load_fashion_mnist("test")
    rng = np.random.default_rng(5)
    with Embedder.create_from_model_path(model) as emb:
        clean = precision_at_10(index, emb, [x[i] for i in range(n_q)], y[:n_q], FASHION_MNIST_LABELS)
        frames = [render_scene(x[i], rng) for i in range(n_q)]
        kiosk = precision_at_10(index, emb, frames, y[:n_q], FASHION_MNIST_LABELS)
        t_e2e = []
        for f in frames[:200]:
            t1 = time.perf_counter()
            index.search(emb.embed(f).embedding, 10)
            t_e2e.append((time.perf_counter() - t1) * 1e3)
    lat = search_latency(idx_dir, 100_000)
    return {
        "embedding": drift,
        "index_items": len(index),
        "index_build_s": build_s,
        "queries": n_q,
        "precision_at_10_clean": round(clean, 4),
        "precision_at_10_kiosk": round(kiosk, 4),
        "latency_100k": lat,
        "embed_and_search_p50_ms": round(float(np.percentile(t_e2e, 50)), 3),
        "embed_and_search_index_items": len(index),
        "seconds": round(time.perf_counter() - t0, 1),
    }


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    res = run(ROOT / "out" / "bench", quick=quick)
    print(json.dumps(res, indent=2))
    (
        ROOT
        / "benchmarks"
        / "results"
        / f"search-{time.strftime('%Y-%m-%d')}{'-quick' if quick else ''}.json"
    ).write_text(json.dumps(res, indent=2) + "\n")
