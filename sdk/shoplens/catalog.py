"""A product catalog index for visual search: build it in chunks, save it atomically, search it.

An index directory holds::

    manifest.json     format, model sha256 and path, dim, dtype, count, skipped, catalog source
    vectors.npy       (count, dim) unit embeddings, int8 (x127) or float16
    products.jsonl    one product per line, in vector order: id, image, category, price, attributes

Building streams the catalog (an image folder with one subfolder per category, or a CSV with
``id,image,category,price`` and any other columns as attributes) in chunks through an
:class:`~shoplens.embedder.Embedder`, writing into ``<out>.partial/`` with a checkpoint after every
chunk. An interrupted build resumes from its checkpoint; the finished directory is renamed into
place, so a reader never sees half an index. Memory holds one chunk of images, whatever the
catalog's size. Search is exact cosine top-k in numpy, optionally filtered by category (e.g. the
classifier's prediction) or by attributes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shoplens._manifest import read_manifest
from shoplens.data.datasets import IMAGE_EXTENSIONS, read_image
from shoplens.errors import DataError, ModelError, UsageError
from shoplens.internal.atomic import sha256_file
from shoplens.internal.outputs import check_output_dir, output_lock, publish_output_dir
from shoplens.internal.progress import progress

__all__ = ["INDEX_FORMAT", "CatalogIndex", "Product", "SearchHit", "build_index", "read_catalog"]

INDEX_FORMAT = 1
_BASE_COLUMNS = ("id", "image", "category", "price")


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
    product: Product
    score: float  # cosine similarity

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
                    k: v for k, v in r.items() if k not in _BASE_COLUMNS and k is not None and v is not None
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


# -- building ---------------------------------------------------------------------------------
def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def build_index(
    catalog: str | Path,
    embedder_model: str | Path,
    out: str | Path,
    *,
    dtype: str = "int8",
    chunk: int = 256,
    overwrite: bool = False,
    show_progress: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Build (or resume building) the index of ``catalog`` with ``embedder_model`` into ``out``.

    Returns the manifest. ``stop_after`` stops after that many products (tests use it to
    simulate an interruption; the partial build then resumes on the next call).
    """

    if dtype not in ("int8", "float16"):
        raise UsageError(f"index dtype must be int8 or float16, got {dtype!r}")
    if chunk < 1:
        raise UsageError(f"chunk must be >= 1, got {chunk}")
    src = read_catalog(catalog)
    out = Path(out)
    if not Path(embedder_model).is_file():
        raise ModelError(f"embedding model {embedder_model} does not exist")
    with output_lock(out):
        check_output_dir(out, overwrite=overwrite, inputs=[src.path, embedder_model])
        return _build(src, Path(embedder_model), out, dtype, chunk, show_progress, stop_after)


def _build(
    src: CatalogSource, embedder_model: Path, out: Path, dtype: str, chunk: int, show_progress: bool,
    stop_after: int | None,
) -> dict[str, Any]:  # fmt: skip
    from shoplens.embedder import Embedder

    model_sha = sha256_file(embedder_model)
    work = out.with_name(out.name + ".partial")
    ckpt_path = work / "checkpoint.json"
    with Embedder.create_from_model_path(embedder_model) as emb:
        dim = emb.dim
        state: dict[str, Any] = {
                 "catalog": str(src.path), "fingerprint": src.fingerprint, "model_sha256": model_sha,
                 "dim": dim, "dtype": dtype, "count": src.count, "done": 0, "kept": 0, "skipped": 0,
                 "products_bytes": 0}  # fmt: skip
        resumed = False
        if ckpt_path.is_file():
            try:
                old = json.loads(ckpt_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = {}
            same = all(
                old.get(k) == state[k] for k in ("catalog", "fingerprint", "model_sha256", "dim", "dtype")
            )
            if same:
                state, resumed = old, True
        if not resumed:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            np.lib.format.open_memmap(work / "vectors.partial.npy", mode="w+", dtype=np.dtype(dtype),
                                      shape=(src.count, dim)).flush()  # fmt: skip
            (work / "products.jsonl").write_bytes(b"")
            _write_json(ckpt_path, state)
        vecs = np.load(work / "vectors.partial.npy", mmap_mode="r+")
        with (work / "products.jsonl").open("r+b") as fh:
            fh.truncate(state["products_bytes"])  # drop lines written after the last checkpoint
        t0 = time.perf_counter()
        with progress(show_progress, f"indexing {src.path.name}", src.count) as bar:
            bar.advance(state["done"])
            rows = src.rows()
            for _ in range(state["done"]):
                next(rows)
            pending: list[Product] = []

            def flush(batch: list[Product]) -> None:
                lines = []
                kept = state["kept"]
                for prod in batch:
                    img = read_image(Path(prod.image))
                    if img is None:
                        state["skipped"] += 1
                        continue
                    r = emb.embed(img)
                    if r.embedding is None:  # pragma: no cover - quality gate off by default
                        state["skipped"] += 1
                        continue
                    vecs[kept] = store_vectors(r.embedding[None], dtype)[0]
                    lines.append(json.dumps(prod.to_dict(), separators=(",", ":")) + "\n")
                    kept += 1
                vecs.flush()
                with (work / "products.jsonl").open("ab") as f:
                    f.write("".join(lines).encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())
                state["kept"] = kept
                state["done"] += len(batch)
                state["products_bytes"] = (work / "products.jsonl").stat().st_size
                _write_json(ckpt_path, state)
                bar.advance(len(batch))

            for prod in rows:
                pending.append(prod)
                if len(pending) == chunk:
                    flush(pending)
                    pending = []
                    if stop_after is not None and state["done"] >= stop_after:
                        return {"interrupted": True, **state}
            if pending:
                flush(pending)
        kept = state["kept"]
        if kept == 0:
            shutil.rmtree(work, ignore_errors=True)
            raise DataError(f"none of the {src.count} catalog images in {src.path} could be read")
        vecs.flush()
        manifest = finish_index(work, kept, dim, dtype, {
            "model_sha256": model_sha, "model_path": str(Path(embedder_model).resolve()),
            "skipped": state["skipped"], "catalog": str(src.path),
            "build_seconds": round(time.perf_counter() - t0, 2), "resumed": resumed,
        })  # fmt: skip
        ckpt_path.unlink()
    publish_output_dir(work, out, command="index build")
    return manifest


def store_vectors(v: np.ndarray, dtype: str) -> np.ndarray:
    """Unit vectors (N, D) as the index stores them: int8 (x127, rounded) or float16."""
    if dtype == "int8":
        return np.clip(np.rint(np.asarray(v, np.float32) * 127), -127, 127).astype(np.int8)
    return np.asarray(v, np.float16)


def finish_index(work: Path, kept: int, dim: int, dtype: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Turn a work folder (``vectors.partial.npy`` with ``kept`` filled rows, ``products.jsonl``)
    into a finished index: the final vectors, the manifest. Every builder ends here."""
    partial = np.load(work / "vectors.partial.npy", mmap_mode="r")
    final = np.lib.format.open_memmap(work / "vectors.npy", mode="w+", dtype=partial.dtype, shape=(kept, dim))
    for s in range(0, kept, 65536):
        final[s : s + 65536] = partial[s : min(kept, s + 65536)]
    final.flush()
    del final, partial
    (work / "vectors.partial.npy").unlink()
    manifest = {
        "format": INDEX_FORMAT, "dim": dim, "dtype": dtype, "count": kept, **fields,
        "categories": sorted({json.loads(x)["category"] for x in _lines(work / "products.jsonl")}),
    }  # fmt: skip
    _write_json(work / "manifest.json", manifest)
    return manifest


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as fh:
        yield from fh


# -- the index --------------------------------------------------------------------------------
def _check_model(root: Path, manifest: dict[str, Any], model: Path) -> None:
    if not model.is_file():
        raise ModelError(f"embedding model {model} does not exist")
    sha = sha256_file(model)
    if sha != manifest.get("model_sha256"):
        raise DataError(
            f"index {root} was built with another model "
            f"(sha256 {str(manifest.get('model_sha256'))[:12]}...), "
            f"not {model.name} ({sha[:12]}...); rebuild it with 'shoplens index build'"
        )



class CatalogIndex:
    """A loaded index: unit vectors as float32, searched by exact cosine.

    Small indexes are one matrix-vector product. From ``BOUNDED_FROM`` items on, a query reads
    far less memory (the product is bandwidth-bound: 100k x 256 float32 is 100 MB per query): the
    vectors are kept in an orthonormal PCA basis, split into a head (the first ``HEAD_DIMS``
    components, where most of the energy is) and a tail with per-item tail norms. The head score
    plus ``|q_tail| * |v_tail|`` bounds each item's cosine from above (Cauchy-Schwarz); exact
    scores are computed for the best bounds until the k-th exact score exceeds every remaining
    bound. The result is the exact top-k (a rotation preserves dot products), only faster.
    """

    BOUNDED_FROM = 20_000
    HEAD_DIMS = 64

    def __init__(
        self, root: Path, manifest: dict[str, Any], vectors: np.ndarray, products: list[Product]
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.vectors = vectors
        self.products = products
        self._set_categories()
        self._prepared: tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _set_categories(self) -> None:
        names = sorted({p.category for p in self.products})
        self._category_code = {n: i for i, n in enumerate(names)}
        self._category_codes = np.array([self._category_code[p.category] for p in self.products], np.int32)

    def _prepare(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        v = self.vectors
        if self._prepared is not None and self._prepared[0] == id(v):
            return self._prepared
        rng = np.random.default_rng(0)
        sample = v[rng.choice(len(v), min(len(v), 20_000), replace=False)].astype(np.float64)
        w, basis = np.linalg.eigh(sample.T @ sample)
        basis = np.ascontiguousarray(basis[:, np.argsort(-w)], np.float32)
        rotated = v @ basis
        h = min(self.HEAD_DIMS, v.shape[1])
        head = np.ascontiguousarray(rotated[:, :h])
        tail = np.ascontiguousarray(rotated[:, h:])
        self._prepared = (id(v), basis, head, tail, np.linalg.norm(tail, axis=1))
        return self._prepared

    def _scores_exact_topk(
        self, q: np.ndarray, k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores) of the exact top-k, by the head bound (see the class docstring)."""
        _, basis, head, tail, tail_norm = self._prepare()
        qr = q @ basis
        h = head.shape[1]
        qh, qt = qr[:h], qr[h:]
        sh = head @ qh
        bound = sh + float(np.linalg.norm(qt)) * tail_norm
        if mask is not None:
            bound = np.where(mask, bound, -np.inf)
        m = min(len(bound), max(4 * k, 64))
        cand = np.argpartition(-bound, m - 1)[:m]
        exact = sh[cand] + tail[cand] @ qt
        tau = np.partition(exact, len(exact) - k)[len(exact) - k]
        more = np.flatnonzero(bound >= tau)
        more = more[~np.isin(more, cand)]
        if len(more):
            cand = np.concatenate([cand, more])
            exact = np.concatenate([exact, sh[more] + tail[more] @ qt])
        top = np.argpartition(-exact, k - 1)[:k]
        return cand[top], exact[top]

    def __len__(self) -> int:
        return len(self.products)

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories of the indexed products, sorted."""
        return tuple(self._category_code)

    @property
    def model_path(self) -> Path | None:
        """The embedding model the index was built with (as recorded), if it names one."""
        p = self.manifest.get("model_path")
        return Path(str(p)) if p else None

    def check_model(self, model: str | Path) -> None:
        """DataError unless ``model`` is the embedding model this index was built with (sha256)."""
        _check_model(self.root, self.manifest, Path(model))

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def load(cls, path: str | Path, *, model: str | Path | None = None) -> CatalogIndex:
        """Load and check an index; with ``model``, refuse an index built with another model."""
        root = Path(path)
        manifest = read_manifest(root, "index", INDEX_FORMAT, ("count", "dim"))
        try:
            count, dim = int(manifest["count"]), int(manifest["dim"])
        except (ValueError, TypeError) as exc:
            raise DataError(f"index manifest {root / 'manifest.json'} is malformed: {exc}") from None
        if model is not None:
            _check_model(root, manifest, Path(model))
        try:
            raw = np.load(root / "vectors.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"index vectors {root / 'vectors.npy'} are corrupt or missing: {exc}") from None
        if raw.shape != (count, dim) or raw.dtype not in (np.int8, np.float16):
            raise DataError(f"index vectors are {raw.shape} {raw.dtype}; the manifest says ({count}, {dim})")
        vecs = np.asarray(raw, np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        vecs /= np.where(norms > 0, norms, 1.0)  # undo the int8/float16 rounding of the lengths
        products = []
        try:
            for line in _lines(root / "products.jsonl"):
                if line.strip():
                    products.append(Product.from_dict(json.loads(line)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"index products {root / 'products.jsonl'} are corrupt: {exc}") from None
        if len(products) != count:
            raise DataError(f"index {root} lists {len(products)} products for {count} vectors")
        return cls(root, manifest, vecs, products)

    def search(
        self,
        query: np.ndarray,
        k: int = 10,
        *,
        category: str | None = None,
        where: Mapping[str, str] | None = None,
    ) -> list[SearchHit]:
        """The k most similar products to a unit ``query`` vector, best first."""
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
            raise UsageError(f"k must be a positive integer, got {k!r}")
        q = np.asarray(query, np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise UsageError(f"query has {q.shape[0]} dimensions, the index {self.dim}")
        mask = None
        if category is not None or where:
            mask = np.ones(len(self.products), bool)
            if category is not None:
                if len(self._category_codes) != len(self.products):
                    self._set_categories()
                if category not in self._category_code:
                    raise UsageError(
                        f"unknown category {category!r}; the index has: {', '.join(self.categories)}"
                    )
                mask &= self._category_codes == self._category_code[category]
            for key, val in (where or {}).items():
                mask &= np.array([p.attributes.get(key) == val for p in self.products])
            k = min(k, int(mask.sum()))
            if k == 0:
                return []
        k = min(k, len(self.products))
        if len(self.products) >= self.BOUNDED_FROM:
            idx, sc = self._scores_exact_topk(q, k, mask)
        else:
            scores = self.vectors @ q
            if mask is not None:
                scores = np.where(mask, scores, -np.inf)
            idx = np.argpartition(-scores, k - 1)[:k]
            sc = scores[idx]
        order = np.argsort(-sc, kind="stable")
        return [
            SearchHit(self.products[int(i)], float(s)) for i, s in zip(idx[order], sc[order], strict=True)
        ]
