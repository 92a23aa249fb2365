"""Visual search: retrieval quality on Fashion-MNIST (the catalog-scale figures: benchmarks.search_scale).

    .venv/bin/python -m benchmarks.search [--quick]     # about 3 minutes here (quick: 40 s)

* the embedding model: the reference model's pooling layer, L2-normalized, int8 (as
  ``shoplens convert --embedding auto`` writes it), with its float-vs-int8 cosine;
* the index: the Fashion-MNIST training split as a catalog (60,000 products; quick: 5,000);
* same-category precision@10 for test-split queries, clean images and kiosk frames, through the
  index ``kind="auto"`` builds (hnsw at 60,000) and through an exact index of the same vectors;
* embed + search end to end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import REF, ROOT, reference_key
from shoplens.internal.atomic import atomic_write_text


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


def run(out: Path, quick: bool = False) -> dict:
    from shoplens.catalog import CatalogIndex, build_index, index_from_vectors
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
    idx_dir = out / f"index_{n_cat}-{model.stem}-v2"  # built with this very embedding model
    t0 = time.perf_counter()
    if not (idx_dir / "manifest.json").is_file():
        build_index(cat_dir / "products.csv", model, idx_dir, overwrite=True)
    manifest = json.loads((idx_dir / "manifest.json").read_text())
    build_s = manifest["build_seconds"]
    index = CatalogIndex.load(idx_dir, model=model)
    exact_dir = out / f"index_{n_cat}-{model.stem}-v2-exact"  # the same vectors, scanned
    if not (exact_dir / "manifest.json").is_file():
        rows, prods = zip(*index.products(), strict=True)
        index_from_vectors(index.vectors(list(rows)), list(prods), exact_dir, model=model, kind="exact",
                           overwrite=True)  # fmt: skip
    exact = CatalogIndex.load(exact_dir, model=model)
    n_q = 200 if quick else 1000
    x, y = load_fashion_mnist("test")
    rng = np.random.default_rng(5)
    with Embedder.create_from_model_path(model) as emb:
        frames = [render_scene(x[i], rng) for i in range(n_q)]
        precision = {
            kind: {
                "clean": round(precision_at_10(idx, emb, list(x[:n_q]), y[:n_q], FASHION_MNIST_LABELS), 4),
                "kiosk": round(precision_at_10(idx, emb, frames, y[:n_q], FASHION_MNIST_LABELS), 4),
            }
            for kind, idx in ((index.kind, index), ("exact", exact))
        }
        t_e2e = []
        for f in frames[:200]:
            t1 = time.perf_counter()
            index.search(emb.embed(f).embedding, 10)
            t_e2e.append((time.perf_counter() - t1) * 1e3)
    return {
        "embedding": drift,
        "index_items": len(index),
        "index_build_s": build_s,
        "queries": n_q,
        "index_kind": index.kind,
        "precision_at_10": precision,
        "precision_at_10_clean": precision[index.kind]["clean"],
        "precision_at_10_kiosk": precision[index.kind]["kiosk"],
        "embed_and_search_p50_ms": round(float(np.percentile(t_e2e, 50)), 3),
        "embed_and_search_index_items": len(index),
        "seconds": round(time.perf_counter() - t0, 1),
    }


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    res = run(ROOT / "out" / "bench", quick=quick)
    print(json.dumps(res, indent=2))
    name = f"search-{time.strftime('%Y-%m-%d')}{'-quick' if quick else ''}.json"
    out = ROOT / "benchmarks" / "results" / name
    atomic_write_text(out, json.dumps(res, indent=2) + "\n", overwrite=True)
