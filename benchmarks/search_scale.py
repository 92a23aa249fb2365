"""Search at catalog scale: 1,000,000 and 100,000 real embeddings, the HNSW index against exact search.

    .venv/bin/python -m benchmarks.search_scale [--quick]    # first run: ~25 min to embed 1M views (2 cores)

* data: ``benchmarks.search_data`` (the reference embedding model on Fashion-MNIST products in
  kiosk scenes; cached under ``out/bench``); the queries are 1,000 other views (another seed);
  every product gets a category (its class, 10 %), a brand (one of 100: 1 %) and a price;
* builds: ``index_from_vectors`` with ``kind="hnsw"`` (2 cores) and, at 100k, ``kind="exact"``;
* search figures in a fresh subprocess with one thread (``OPENBLAS_NUM_THREADS=1``, usearch
  ``threads=1``), one query at a time: load time, p50/p95, recall@10 against the same index's exact
  search (computed beforehand in this process), the 1 % brand filter (first query and the next
  ones), the 10 % category filter through the graph, and the peak RSS of the searching process;
* the two ANN libraries side by side on the first 200,000 embeddings (``compare_libraries``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import ROOT
from shoplens.internal.atomic import atomic_write_text

ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def products_for(cats: np.ndarray, seed: int = 0) -> list:
    from shoplens.catalog import Product
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS

    rng = np.random.default_rng(seed)
    brands = rng.integers(0, 100, len(cats))
    prices = np.round(rng.uniform(5, 200, len(cats)), 2)
    names = [FASHION_MNIST_LABELS[int(c)] for c in cats]
    return [
        Product(f"v{i:07d}", f"views/{i:07d}.png", names[i], float(prices[i]), {"brand": f"b{brands[i]:02d}"})
        for i in range(len(cats))
    ]


def build(vecs: np.ndarray, cats: np.ndarray, out: Path, model: Path, kind: str) -> dict:
    """The index of ``vecs`` (cached by size, kind and model); returns its manifest."""
    from shoplens.catalog import index_from_vectors

    if (out / "manifest.json").is_file():
        return json.loads((out / "manifest.json").read_text())
    t0 = time.perf_counter()
    m = index_from_vectors(vecs, products_for(cats), out, model=model, kind=kind, overwrite=True,
                           show_progress=sys.stderr.isatty())  # fmt: skip
    m["wall_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "bench-build.json").write_text(json.dumps({"wall_seconds": m["wall_seconds"]}))
    return m


def ground_truth(index_dir: Path, queries: np.ndarray, **filters) -> np.ndarray:
    """Rows of the exact top-10 of every query (the same index, scanned)."""
    from shoplens.catalog import CatalogIndex

    idx = CatalogIndex.load(index_dir)
    return np.array([[h.row for h in hits] + [-1] * (10 - len(hits))
                     for hits in idx.search_batch(queries, 10, exact=True, **filters)])  # fmt: skip


def _rss_mb(field: str = "VmRSS:") -> float:
    """From /proc, not ru_maxrss: after fork and exec that reports the parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def _recall(res: list, truth: np.ndarray) -> float:
    return float(np.mean([len({h.row for h in r} & set(g[g >= 0].tolist())) / max(1, int((g >= 0).sum()))
                          for r, g in zip(res, truth, strict=True)]))  # fmt: skip


def _measure_main(args: dict) -> dict:
    """In the child (one thread): load, search every query, filters, peak RSS."""
    from shoplens.catalog import CatalogIndex

    qs = np.load(args["queries"])
    out: dict = {"rss_before_load_mb": round(_rss_mb(), 1)}
    t0 = time.perf_counter()
    idx = CatalogIndex.load(args["index"])
    out["load_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
    out["rss_after_load_mb"] = round(_rss_mb(), 1)
    out["kind"] = idx.kind

    def timed(**flt: object) -> tuple[list, list[float]]:
        t, res = [], []
        for q in qs:
            t1 = time.perf_counter()
            res.append(idx.search(q, 10, **flt))
            t.append((time.perf_counter() - t1) * 1e3)
        return res, t

    for q in qs[:20]:
        idx.search(q, 10)
    res, t = timed()
    out["p50_ms"] = round(float(np.percentile(t, 50)), 3)
    out["p95_ms"] = round(float(np.percentile(t, 95)), 3)
    if args.get("truth"):
        out["recall_at_10"] = round(_recall(res, np.load(args["truth"])), 4)
    for name, flt in args.get("filters", {}).items():
        t1 = time.perf_counter()
        idx.search(qs[0], 10, **flt)
        first_ms = (time.perf_counter() - t1) * 1e3
        res, t = timed(**flt)
        d = {"first_query_ms": round(first_ms, 2), "p50_ms": round(float(np.percentile(t, 50)), 3),
             "p95_ms": round(float(np.percentile(t, 95)), 3)}  # fmt: skip
        if args.get("truth_" + name):
            d["recall_at_10"] = round(_recall(res, np.load(args["truth_" + name])), 4)
        out[name] = d
    out["peak_rss_mb"] = round(_rss_mb("VmHWM:"), 1)
    return out


def _child(mode: str, args: dict, env: dict[str, str], timeout: int) -> object:
    p = subprocess.run([sys.executable, "-m", "benchmarks.search_scale", mode, json.dumps(args)],
                       capture_output=True, text=True, env={**os.environ, **env}, timeout=timeout,
                       cwd=ROOT)  # fmt: skip
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def measure(index_dir: Path, queries: Path, **extra: object) -> dict:
    r = _child("--measure", {"index": str(index_dir), "queries": str(queries), **extra}, ONE_THREAD, 3600)
    return r if isinstance(r, dict) else {"error": "unexpected output"}


def scale_point(n: int, vecs: np.ndarray, cats: np.ndarray, qpath: Path, out: Path, model: Path,
                *, with_exact: bool) -> dict:  # fmt: skip
    from shoplens.catalog import CatalogIndex

    tag = f"{n}-{model.stem}"
    hnsw_dir = out / f"ann-hnsw-{tag}"
    print(f"  building the hnsw index of {n:,} embeddings", flush=True)
    m = build(vecs[:n], cats[:n], hnsw_dir, model, "hnsw")
    wall = json.loads((hnsw_dir / "bench-build.json").read_text())["wall_seconds"]
    queries = np.load(qpath)
    print("  exact ground truth", flush=True)
    truth = {"": ground_truth(hnsw_dir, queries)}
    brand = {"where": {"brand": "b07"}}
    category = {"category": "Trouser"}
    truth["brand_1pct"] = ground_truth(hnsw_dir, queries, **brand)
    truth["category_10pct"] = ground_truth(hnsw_dir, queries, **category)
    paths = {}
    for k, v in truth.items():
        paths["truth" + ("_" + k if k else "")] = str(out / f"truth-{tag}-{k or 'all'}.npy")
        np.save(paths["truth" + ("_" + k if k else "")], v)
    print("  searching (one thread, one query at a time)", flush=True)
    res = measure(hnsw_dir, qpath, filters={"brand_1pct": brand, "category_10pct": category}, **paths)
    stats = CatalogIndex.load(hnsw_dir).stats()
    row = {
        "items": n, "build_wall_s": wall, "build_s": m.get("build_seconds"),
        "candidates": m["ann"]["candidates"], "head_dims": m["ann"]["head_dims"],
        "calibration": m["ann"].get("calibration"), "bytes": stats, "hnsw": res,
    }  # fmt: skip
    if with_exact:
        exact_dir = out / f"ann-exact-{tag}"
        print(f"  building the exact index of {n:,} embeddings", flush=True)
        build(vecs[:n], cats[:n], exact_dir, model, "exact")
        row["exact"] = measure(exact_dir, qpath)
        if "p50_ms" in row["exact"] and "p50_ms" in res:
            row["speedup_p50"] = round(row["exact"]["p50_ms"] / res["p50_ms"], 1)
    return row


def _compare_main(args: dict) -> list[dict]:
    """In the child: usearch and faiss configurations on the same vectors (build: 2 threads)."""
    import tempfile

    import faiss
    from usearch.index import Index

    from shoplens.catalog.codes import to_codes, unit

    n = args["n"]
    vecs = unit(to_codes(np.asarray(np.load(args["emb"], mmap_mode="r")[:n])))  # what exact search scores
    qs = np.load(args["queries"]).astype(np.float32)
    truth = np.load(args["truth"])
    sample = vecs[np.random.default_rng(0).choice(n, min(n, 20_000), replace=False)].astype(np.float64)
    w, basis = np.linalg.eigh(sample.T @ sample)
    basis = np.ascontiguousarray(basis[:, np.argsort(-w)[:16]], np.float32)
    head = np.ascontiguousarray(vecs @ basis)
    packed_codes = 192  # bytes per item of the re-rank codes (6 bits x 256)

    def rerank(q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        rows = rows[rows >= 0]
        return rows[np.argsort(-(vecs[rows] @ q))[:10]]

    def row(name: str, search: object, build_s: float, nbytes: int, rerank_from: bool = False) -> dict:
        t, rec = [], []
        for q, g in zip(qs, truth, strict=True):
            t0 = time.perf_counter()
            rows = search(q)  # type: ignore[operator]
            if rerank_from:
                rows = rerank(q, rows)
            t.append((time.perf_counter() - t0) * 1e3)
            rec.append(len(set(rows[:10].tolist()) & set(g.tolist())) / 10)
        return {"config": name, "recall_at_10": round(float(np.mean(rec)), 4),
                "p50_ms": round(float(np.median(t)), 3), "build_s": round(build_s, 1),
                "bytes_per_item": round(nbytes / n, 1)}  # fmt: skip

    def saved(index: object) -> int:
        f = tempfile.mktemp()
        index.save(f)  # type: ignore[attr-defined]
        size = os.path.getsize(f)
        os.unlink(f)
        return size

    rows = []
    t0 = time.perf_counter()
    u1 = Index(ndim=16, metric="cos", dtype="i8", connectivity=8, expansion_add=128)
    u1.add(np.arange(n), head, threads=2)
    bs = time.perf_counter() - t0
    u1.expansion_search = 64
    rows.append(row("usearch HNSW M=8 on a 16-d int8 head, 64 re-ranked (ShopLens)",
                    lambda q: u1.search(q @ basis, 64, threads=1).keys.astype(np.int64), bs,
                    saved(u1) + n * packed_codes, True))  # fmt: skip
    t0 = time.perf_counter()
    u2 = Index(ndim=256, metric="cos", dtype="i8", connectivity=16, expansion_add=128)
    u2.add(np.arange(n), vecs, threads=2)
    bs = time.perf_counter() - t0
    for ef in (64, 256):
        u2.expansion_search = ef
        rows.append(row(f"usearch HNSW M=16, 256-d int8, ef={ef}",
                        lambda q: u2.search(q, 10, threads=1).keys.astype(np.int64), bs,
                        saved(u2)))  # fmt: skip
    faiss.omp_set_num_threads(2)
    t0 = time.perf_counter()
    f1 = faiss.IndexHNSWFlat(16, 8, faiss.METRIC_INNER_PRODUCT)
    f1.hnsw.efConstruction = 128
    f1.add(head)
    bs = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    f1.hnsw.efSearch = 64
    rows.append(row("faiss HNSW M=8 on the 16-d float head, 64 re-ranked",
                    lambda q: f1.search((q @ basis)[None], 64)[1][0], bs,
                    len(faiss.serialize_index(f1)) + n * packed_codes, True))  # fmt: skip
    faiss.omp_set_num_threads(2)
    t0 = time.perf_counter()
    f2 = faiss.IndexHNSWSQ(256, faiss.ScalarQuantizer.QT_8bit, 16, faiss.METRIC_INNER_PRODUCT)
    f2.hnsw.efConstruction = 128
    f2.train(vecs[:50_000])
    f2.add(vecs)
    bs = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    for ef in (64, 256):
        f2.hnsw.efSearch = ef
        rows.append(row(f"faiss HNSW-SQ8 M=16, 256-d, ef={ef}", lambda q: f2.search(q[None], 10)[1][0], bs,
                        len(faiss.serialize_index(f2))))  # fmt: skip
    faiss.omp_set_num_threads(2)
    t0 = time.perf_counter()
    f3 = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(256), 256, 1024, faiss.ScalarQuantizer.QT_8bit,
                                       faiss.METRIC_INNER_PRODUCT)  # fmt: skip
    f3.train(vecs[:50_000])
    f3.add(vecs)
    bs = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    for nprobe in (16, 64):
        f3.nprobe = nprobe
        rows.append(row(f"faiss IVF1024-SQ8, nprobe={nprobe}", lambda q: f3.search(q[None], 10)[1][0], bs,
                        len(faiss.serialize_index(f3))))  # fmt: skip
    return rows


def compare_libraries(emb_path: Path, n: int, qpath: Path, truth_path: Path) -> list[dict]:
    """usearch and faiss on the same embeddings and queries (build on 2 threads, search on 1)."""
    args = {"emb": str(emb_path), "n": n, "queries": str(qpath), "truth": str(truth_path)}
    r = _child("--compare", args, {"OPENBLAS_NUM_THREADS": "1"}, 7200)
    return r if isinstance(r, list) else [r]  # type: ignore[list-item]


def targets(s: dict) -> dict[str, tuple[str, bool]]:
    """The issue's targets, from a run's results."""
    out: dict[str, tuple[str, bool]] = {}
    big, mid = s.get("big", {}), s.get("mid", {})
    h = big.get("hnsw", {})
    if "p50_ms" in h and "recall_at_10" in h:
        out[f"search {big['items']:,} items: p50 <= 1 ms, recall@10 >= 0.98"] = (
            f"p50 {h['p50_ms']:.3f} ms, recall {h['recall_at_10']:.4f}",
            h["p50_ms"] <= 1.0 and h["recall_at_10"] >= 0.98,
        )
        b = big["bytes"]["bytes_per_item_search"]
        out[f"search {big['items']:,} items: <= 300 bytes per item on disk"] = (
            f"{b} (+ {big['bytes']['bytes_per_item_filters']} filter columns)", b <= 300)
        f = h.get("brand_1pct", {})
        if "recall_at_10" in f:
            out["filtered search, 1 % brand: recall@10 >= 0.98"] = (
                f"{f['recall_at_10']:.4f}",
                f["recall_at_10"] >= 0.98,
            )
    hm, em = mid.get("hnsw", {}), mid.get("exact", {})
    if "p50_ms" in hm and "p50_ms" in em and "recall_at_10" in hm:
        out[f"search {mid['items']:,} items: faster than exact, recall@10 >= 0.99"] = (
            f"p50 {hm['p50_ms']:.3f} ms vs exact {em['p50_ms']:.3f} ms, recall {hm['recall_at_10']:.4f}",
            hm["p50_ms"] < em["p50_ms"] and hm["recall_at_10"] >= 0.99,
        )
    return out


def run(out: Path, quick: bool = False) -> dict:
    from benchmarks.search import build_embedding_model
    from benchmarks.search_data import build as build_data

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    model, _ = build_embedding_model(out)
    n_big, n_mid, n_cmp, n_q = (20_000, 5_000, 5_000, 200) if quick else (1_000_000, 100_000, 200_000, 1000)
    print(f"  embeddings: {n_big:,} catalog views and {n_q:,} query views", flush=True)
    emb_path, cat_path = build_data(model, n_big, out, seed=7, show_progress=sys.stderr.isatty())
    q_emb, _ = build_data(model, n_q, out, seed=11, show_progress=False)
    vecs = np.load(emb_path, mmap_mode="r")
    cats = np.load(cat_path)
    res: dict = {"model": model.name, "queries": n_q}
    res["mid"] = scale_point(n_mid, vecs, cats, q_emb, out, model, with_exact=True)
    res["big"] = scale_point(n_big, vecs, cats, q_emb, out, model, with_exact=False)
    print(f"  usearch and faiss side by side on {n_cmp:,} embeddings", flush=True)
    truth = out / f"truth-cmp-{n_cmp}.npy"
    # the comparison's ground truth: exact top-10 over the same codes (the exact index's answer)
    from shoplens.catalog.codes import to_codes, unit

    base = unit(to_codes(np.asarray(vecs[:n_cmp])))
    qs = np.load(q_emb)
    np.save(truth, np.argsort(-(qs @ base.T), axis=1)[:, :10])
    res["libraries"] = compare_libraries(emb_path, n_cmp, q_emb, truth)
    res["library_items"] = n_cmp
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("--measure", "--compare"):
        fn = _measure_main if sys.argv[1] == "--measure" else _compare_main
        print(json.dumps(fn(json.loads(sys.argv[2]))))
        raise SystemExit(0)
    quick = "--quick" in sys.argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    r = run(ROOT / "out" / "bench", quick=quick)
    print(json.dumps(r, indent=2))
    name = f"search-scale-{time.strftime('%Y-%m-%d')}{'-quick' if quick else ''}.json"
    atomic_write_text(ROOT / "benchmarks" / "results" / name, json.dumps(r, indent=2) + "\n", overwrite=True)
