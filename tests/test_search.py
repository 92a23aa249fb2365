"""Visual search: a real embedding export, the Embedder, and the catalog index end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import one_line_error, run_cli
from shoplens.catalog import CatalogIndex, build_index, read_catalog
from shoplens.errors import DataError, ModelError, OutputExistsError, UsageError


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shoplens.data.catalog_gen import generate_catalog

    out = tmp_path_factory.mktemp("cat") / "catalog"
    generate_catalog(out, count=400, split="train", seed=3)
    return out


def test_embedder(converted: Path, fmnist_test) -> None:
    from shoplens.embedder import Embedder
    from shoplens.options import RunningMode

    with Embedder.create_from_model_path(converted / "embedding.tflite") as emb:
        r = emb.embed(fmnist_test[0][0])
        assert r.embedding is not None and r.embedding.shape == (emb.dim,)
        assert abs(float(np.linalg.norm(r.embedding)) - 1.0) < 1e-5
        assert emb.categories[0] == "T-shirt/top"
        assert not hasattr(emb, "classify")  # its own task, not a Classifier with stubs
        raw = emb.embed_preprocessed(emb.preprocessor(fmnist_test[0][0])[None])
        np.testing.assert_allclose(raw[0], r.embedding, atol=1e-6)
        with pytest.raises(Exception, match="frame is None"):
            emb.embed(None)
    with pytest.raises(ModelError, match="not an embedding model"):
        Embedder.create_from_model_path(converted / "model.tflite")
    with pytest.raises(UsageError, match="IMAGE or VIDEO"):
        Embedder.create_from_model_path(converted / "embedding.tflite", running_mode=RunningMode.LIVE_STREAM)
    with pytest.raises(UsageError, match="unknown option 'result_callback' for Embedder"):
        Embedder.create_from_model_path(converted / "embedding.tflite", result_callback=lambda *a: None)


def test_build_search_and_filters(converted: Path, catalog: Path, tmp_path: Path, fmnist_test) -> None:
    model = converted / "embedding.tflite"
    m = build_index(catalog / "products.csv", model, tmp_path / "idx", chunk=64)
    assert m["count"] == 400 and m["skipped"] == 0 and m["kind"] == "exact" and 1 <= m["codes"]["bits"] <= 8
    idx = CatalogIndex.load(tmp_path / "idx", model=model)
    from shoplens.embedder import Embedder

    with Embedder.create_from_model_path(model) as emb:
        assert fmnist_test[1][2] == 1
        q = emb.embed(fmnist_test[0][2]).embedding  # a Trouser
    hits = idx.search(q, 10)
    assert len(hits) == 10 and hits[0].score >= hits[-1].score
    assert sum(h.product.category == "Trouser" for h in hits) >= 7
    only_bags = idx.search(q, 5, category="Bag")
    assert len(only_bags) == 5 and {h.product.category for h in only_bags} == {"Bag"}
    brand = idx.product(0).attributes["brand"]
    assert all(h.product.attributes["brand"] == brand for h in idx.search(q, 5, where={"brand": brand}))
    with pytest.raises(UsageError, match="unknown category 'No such category'; the index has: Ankle boot"):
        idx.search(q, 5, category="No such category")
    for bad in (0, -3):
        with pytest.raises(UsageError, match="positive"):
            idx.search(q, bad)
    with pytest.raises(UsageError, match="dimensions"):
        idx.search(q[:-1], 3)
    with pytest.raises(OutputExistsError):
        build_index(catalog / "products.csv", model, tmp_path / "idx")
    # price range and attribute filters together; a hit's row names its product
    cheap = idx.search(q, 5, price=(None, 40.0), where={"brand": brand})
    assert all(h.product.price is not None and h.product.price <= 40.0 for h in cheap)
    assert all(idx.product(h.row) == h.product for h in hits)
    with pytest.raises(UsageError, match="cannot filter on 'size'; filter columns: category"):
        idx.search(q, 5, where={"size": "M"})
    # every product's colour was named from its image at build time, and is a filter
    named = idx.product(hits[0].row).attributes["colour"]
    same = idx.search(q, 5, colour=named.upper())
    assert same and all(h.product.attributes["colour"] == named for h in same)
    with pytest.raises(UsageError, match="unknown colour 'mauve'; the palette: black, gray, white"):
        idx.search(q, 5, colour="mauve")
    assert idx.search(q, 5, where={"brand": "no such brand"}) == []


def test_interrupted_build_resumes(converted: Path, catalog: Path, tmp_path: Path) -> None:
    model = converted / "embedding.tflite"
    part = build_index(catalog / "products.csv", model, tmp_path / "r", chunk=50, stop_after=150)
    assert part["interrupted"] and part["done"] == 150
    assert (tmp_path / "r.partial" / "checkpoint.json").is_file() and not (tmp_path / "r").exists()
    m = build_index(catalog / "products.csv", model, tmp_path / "r", chunk=50)
    assert m["resumed"] and m["count"] == 400
    build_index(catalog / "products.csv", model, tmp_path / "full", chunk=50)
    a = (tmp_path / "r" / "codes.bin").read_bytes()
    assert a == (tmp_path / "full" / "codes.bin").read_bytes()
    assert (tmp_path / "r" / "products.jsonl").read_text() == (
        tmp_path / "full" / "products.jsonl"
    ).read_text()
    assert not (tmp_path / "r.partial").exists()


def test_bad_catalogs_and_indexes(converted: Path, catalog: Path, tmp_path: Path) -> None:
    model = converted / "embedding.tflite"
    (tmp_path / "empty.csv").write_text("id,image,category,price\n")
    with pytest.raises(DataError, match="lists no products"):
        read_catalog(tmp_path / "empty.csv")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        read_catalog(tmp_path / "emptydir")
    (tmp_path / "nocol.csv").write_text("sku,path\n1,a.png\n")
    with pytest.raises(DataError, match="lacks the column"):
        read_catalog(tmp_path / "nocol.csv")
    # a missing image is skipped and counted
    cat2 = tmp_path / "cat2"
    shutil.copytree(catalog, cat2)
    (cat2 / "images" / "000007.png").unlink()
    m = build_index(cat2 / "products.csv", model, tmp_path / "i2")
    assert m["count"] == 399 and m["skipped"] == 1
    # index/model mismatch, corrupt vectors, corrupt manifest
    with pytest.raises(DataError, match="built with another model"):
        CatalogIndex.load(tmp_path / "i2", model=converted / "model.tflite")
    vec = tmp_path / "i2" / "codes.bin"
    vec.write_bytes(vec.read_bytes()[:500])
    with pytest.raises(DataError, match="truncated"):
        CatalogIndex.load(tmp_path / "i2")
    (tmp_path / "i2" / "manifest.json").write_text("{oops")
    with pytest.raises(DataError, match="malformed"):
        CatalogIndex.load(tmp_path / "i2")


def test_cli_index_and_search(converted: Path, catalog: Path, tmp_path: Path, fmnist_test) -> None:
    import cv2

    idx = tmp_path / "index"
    emb = str(converted / "embedding.tflite")
    p = run_cli("index", "build", str(catalog / "products.csv"), "--model", emb,
                "--out", str(idx), "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["count"] == 400
    q = tmp_path / "q.png"
    cv2.imwrite(str(q), fmnist_test[0][2])
    p = run_cli(
        "search", str(idx), str(q), "--k", "4", "--classifier", str(converted / "model.tflite"), "--json"
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert len(d["results"]) == 4 and d["predicted_category"] == d["category_filter"]
    assert {r["category"] for r in d["results"]} == {d["predicted_category"]}
    assert {"id", "price", "score", "attributes"} <= set(d["results"][0])
    # open set: the query (a test image, not in the catalog) is under a similarity of 1, over -1
    for threshold, is_product, n in (("1.0", False, 0), ("-1", True, 10)):
        p = run_cli("search", str(idx), str(q), "--min-similarity", threshold, "--json")
        d = json.loads(p.stdout)
        assert p.returncode == 0 and d["is_product"] is is_product and len(d["results"]) == n, p.stderr
    p = run_cli("search", str(idx), str(q), "--min-similarity", "1.0")
    assert p.returncode == 0 and p.stdout.startswith("no product recognised"), p.stdout
    one_line_error(run_cli("search", str(idx), str(q), "--min-score", "0.5"), 2, "--min-score goes with")
    one_line_error(run_cli("search", str(idx), str(q), "--min-similarity", "3"), 2, "open-set min_similarity")
    one_line_error(run_cli("search", str(idx), str(q), "--k", "0"), 2, "--k must be a positive")
    one_line_error(run_cli("search", str(idx), str(tmp_path / "none.png")), 2, "cannot read image")
    one_line_error(run_cli("index", "build", str(catalog / "products.csv"), "--model",
                           emb, "--out", str(idx)), 2, "--overwrite")  # fmt: skip
    one_line_error(run_cli("search", str(tmp_path), str(q), "--model", emb), 2,
                   "not a ShopLens index")  # fmt: skip


def test_bounded_search_is_exact_on_a_large_index(converted: Path, tmp_path: Path) -> None:
    """From 20k items an exact index reads a 64-d head and bounds the tail; the top-k must not change."""
    from shoplens.catalog import Product, index_from_vectors

    rng = np.random.default_rng(1)
    centers = rng.normal(size=(12, 128))
    labels = rng.integers(0, 12, 25_000)
    v = centers[labels] + rng.normal(0, 0.8, (25_000, 128))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    prods = [Product(f"p{i}", f"{i}.png", f"c{labels[i]}") for i in range(len(v))]
    index_from_vectors(v, prods, tmp_path / "big", model=converted / "embedding.tflite", kind="exact")
    idx = CatalogIndex.load(tmp_path / "big")
    assert idx.kind == "exact" and len(idx) >= idx.BOUNDED_FROM
    stored = idx.vectors(np.arange(len(v)))  # what the index holds: the codes, decoded
    assert float(np.min(np.sum(stored * v, axis=1))) > 0.999
    for q in v[rng.choice(len(v), 40)] + rng.normal(0, 0.1, (40, 128)).astype(np.float32):
        q = q / np.linalg.norm(q)
        s = stored @ q
        want = np.argsort(-s)[:10]
        got = idx.search(q, 10)
        assert [h.product.id for h in got] == [f"p{i}" for i in want]
        assert np.allclose([h.score for h in got], s[want], atol=1e-5)
        mask = labels == 3
        sm = np.where(mask, s, -np.inf)
        got = idx.search(q, 5, category="c3")
        assert [h.product.id for h in got] == [f"p{i}" for i in np.argsort(-sm)[:5]]
