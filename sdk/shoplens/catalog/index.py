"""``CatalogIndex``: open an index (memory-mapped) and search it, exactly or through its graph.

One API for both kinds of index (``manifest["kind"]``):

* **exact** (small catalogs, and the ground truth): the unit vectors are decoded into memory and
  every query is an exact cosine top-k. From ``BOUNDED_FROM`` rows a query reads a 64-d head and a
  bound on the tail instead of every vector (:mod:`shoplens.catalog.exact`); the answer is the same.
* Integrity (manifest, file sizes and digests, the embedding model): :mod:`shoplens.catalog.integrity`.
* **hnsw** (large catalogs): the usearch graph proposes ``candidates`` rows from the query's head
  vector, and the stored codes re-rank them exactly, so each returned score is the exact score.
  Filters narrow the rows: a small allowed set (a 1 % category) is scanned exactly, a large one is
  searched through the graph with the candidate count scaled by the allowed share.

Removed products are skipped by every path. ``search(..., exact=True)`` scans all codes of an
hnsw index (slow at a million rows; for ground truth and for checks).
"""

from __future__ import annotations

import json
import math
import mmap
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.catalog.codes import CodeFormat
from shoplens.catalog.exact import BoundedExact
from shoplens.catalog.integrity import check_digest, check_model, check_size, read_index_manifest
from shoplens.catalog.source import Product, SearchHit
from shoplens.catalog.store import CHUNK, iter_chunks
from shoplens.errors import DataError, UsageError

__all__ = ["CatalogIndex"]

PriceRange = tuple[float | None, float | None]


@dataclass
class _Selection:
    """The rows a filter allows: a mask (None: every live row), their numbers when few, the count,
    and (once searched) their decoded vectors, so a repeated filter costs one product."""

    mask: np.ndarray | None
    rows: np.ndarray | None
    count: int
    vectors: np.ndarray | None = None


class CatalogIndex:
    """A loaded catalog index: ``search`` a unit query vector for its most similar products."""

    BOUNDED_FROM = 20_000
    FILTER_SCAN_MAX = 20_000  # hnsw: an allowed set this small is scanned exactly
    MAX_CANDIDATES = 4_096  # hnsw: beyond this many graph candidates a filtered query is scanned
    SUBSET_CACHE_BYTES = 64 << 20  # decoded vectors of recent small filters kept for the next query

    def __init__(self, root: Path, manifest: dict[str, Any], *, verify: bool = False) -> None:
        self.root = root
        self.manifest = manifest
        self.kind: str = manifest["kind"]
        self.rows = int(manifest["rows"])
        self._fmt = CodeFormat.from_dict(manifest["codes"])
        files = manifest["files"]
        for name, entry in files.items():
            check_size(root / name, int(entry["bytes"]), exact=name.endswith(".usearch"))
            if (verify and not name.endswith(".usearch")) or name == "basis.bin":  # the graph checks its own
                check_digest(root / name, entry)
        self._codes = self._array(manifest["codes_file"], np.uint8, (self.rows, self._fmt.row_bytes))
        self._offsets = self._array("offsets.bin", np.uint64, (self.rows + 1,))
        self._price = self._array("price.bin", np.float32, (self.rows,))
        self._columns = {c["name"]: c for c in manifest["columns"]}
        self._column_codes = {
            c["name"]: self._array(c["file"], np.dtype(c["dtype"]), (self.rows,)) for c in manifest["columns"]
        }
        self._value_code = {c["name"]: {v: i for i, v in enumerate(c["values"])} for c in manifest["columns"]}
        removed_bits = np.fromfile(root / manifest["removed_file"], np.uint8)
        if len(removed_bits) * 8 < self.rows:
            raise DataError(f"index file {root / manifest['removed_file']} is truncated")
        self._removed = np.unpackbits(removed_bits, count=self.rows).astype(bool)
        self._n_live = int(self.rows - self._removed.sum())
        if self._n_live != int(manifest["count"]):
            raise DataError(
                f"index {root}: the manifest says {manifest['count']} products, its files {self._n_live}"
            )
        self._records = self._open_records()
        self._selections: OrderedDict[Any, _Selection] = OrderedDict()
        self.candidates = int((manifest.get("ann") or {}).get("candidates", 128))
        self._graph: Any = None
        self._basis: np.ndarray | None = None
        self._exact: BoundedExact | None = None
        if self.kind == "hnsw":
            from shoplens.catalog.ann import HnswGraph

            a = manifest["ann"]
            entry = files[a["graph"]]
            self._graph = HnswGraph.open(root / a["graph"], size=int(entry["bytes"]), sha256=entry["sha256"])
            self._basis = self._array("basis.bin", np.float32, (self.dim, int(a["head_dims"]))).copy()
        else:
            self._exact = BoundedExact(self._fmt.decode(self._codes), self.BOUNDED_FROM)

    def _array(self, name: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        path = self.root / name
        if int(np.prod(shape)) == 0:
            return np.empty(shape, dtype)
        try:
            return np.memmap(path, dtype, "r", shape=shape)
        except (OSError, ValueError) as exc:
            raise DataError(f"index file {path} cannot be read: {exc}") from None

    def _open_records(self) -> Any:
        path = self.root / "products.jsonl"
        end = int(self._offsets[-1]) if self.rows else 0
        if end != int(self.manifest["files"]["products.jsonl"]["bytes"]) or int(self._offsets[0]) != 0:
            raise DataError(f"index file {self.root / 'offsets.bin'} does not match products.jsonl: corrupt")
        if end == 0:
            return b""
        with path.open("rb") as fh:
            return mmap.mmap(fh.fileno(), end, access=mmap.ACCESS_READ)

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, model: str | Path | None = None, verify: bool = False) -> CatalogIndex:
        """Open an index by memory-mapping its files (vectors are read when a search needs them).

        Args:
          model: refuse an index built with another embedding model (sha256).
          verify: also check every file's sha256 (the graph's is always checked).

        Raises:
          DataError: a missing, truncated or corrupt index, or one built with another model.
        """
        root = Path(path)
        manifest = read_index_manifest(root)
        if model is not None:
            check_model(root, manifest, Path(model))
        try:
            return cls(root, manifest, verify=verify)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"index manifest {root / 'manifest.json'} is malformed: {exc!r}") from None

    # -- what the index holds ---------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n_live

    @property
    def dim(self) -> int:
        return self._fmt.dim

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories of the indexed products, sorted."""
        return tuple(self.manifest.get("categories", ()))

    @property
    def filter_columns(self) -> tuple[str, ...]:
        """Columns ``where`` can filter on (category and the catalog's attribute columns)."""
        return tuple(self._columns)

    @property
    def model_path(self) -> Path | None:
        """The embedding model the index was built with (as recorded), if it names one."""
        p = self.manifest.get("model_path")
        return Path(str(p)) if p else None

    def check_model(self, model: str | Path) -> None:
        """DataError unless ``model`` is the embedding model this index was built with (sha256)."""
        check_model(self.root, self.manifest, Path(model))

    def product(self, row: int) -> Product:
        """The product stored at ``row`` (a :class:`SearchHit` carries its row)."""
        if not 0 <= row < self.rows:
            raise UsageError(f"row {row} is outside the index (0..{self.rows - 1})")
        a, b = int(self._offsets[row]), int(self._offsets[row + 1])
        try:
            return Product.from_dict(json.loads(self._records[a:b]))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"index products {self.root / 'products.jsonl'} row {row} is corrupt: {exc}"
            ) from None

    def is_removed(self, row: int) -> bool:
        return bool(self._removed[row])

    def products(self) -> Iterator[tuple[int, Product]]:
        """``(row, product)`` of every product in the index (removed ones skipped)."""
        for row in np.flatnonzero(~self._removed):
            yield int(row), self.product(int(row))

    def vectors(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The unit vectors stored at ``rows`` (decoded codes), (len(rows), dim) float32."""
        r = np.asarray(rows, np.int64)
        if r.size and (r.min() < 0 or r.max() >= self.rows):
            raise UsageError(f"rows must lie in 0..{self.rows - 1}")
        return self._fmt.decode(self._codes[r])

    def stats(self) -> dict[str, Any]:
        """Sizes on disk: bytes per product of the search structure, the filters and the records."""
        files = {f: int(e["bytes"]) for f, e in self.manifest["files"].items()}
        n = max(1, self.rows)
        search = sum(
            v for f, v in files.items() if f.startswith("codes") or f.endswith(".usearch") or f == "basis.bin"
        )
        filters = sum(v for f, v in files.items() if f.startswith(("col-", "price", "removed")))
        records = sum(v for f, v in files.items() if f in ("products.jsonl", "offsets.bin"))
        return {
            "kind": self.kind, "rows": self.rows, "products": len(self), "dim": self.dim,
            "code_bits": self._fmt.bits, "bytes_per_item_search": round(search / n, 1),
            "bytes_per_item_filters": round(filters / n, 1), "bytes_per_item_records": round(records / n, 1),
            "bytes_total": sum(files.values()),
        }  # fmt: skip

    # -- searching ------------------------------------------------------------------------------
    def search(
        self,
        query: np.ndarray,
        k: int = 10,
        *,
        category: str | None = None,
        where: Mapping[str, str] | None = None,
        price: PriceRange | None = None,
        colour: str | None = None,
        exact: bool = False,
    ) -> list[SearchHit]:
        """The k products most similar to a unit ``query`` vector, best first.

        Args:
          category: only products of this category (UsageError if the index has none).
          where: only products whose attribute columns have these values, e.g. ``{"brand": "Acme"}``.
          price: only products priced in ``(low, high)`` (inclusive; ``None`` leaves a side open).
          colour: only products whose dominant colour has this palette name (``shoplens.colour``).
          exact: scan every vector even when the index has a graph (for checks; slow when large).
        """
        q = self._query(query)
        k = _check_k(k)
        sel = self._select(category, _with_colour(where, colour), price)
        if sel.count == 0:
            return []
        k = min(k, sel.count)
        if self._exact is not None:
            rows, scores = self._exact.top_k(q, k, sel.mask)
        elif sel.rows is not None:
            rows, scores = self._subset_top_k(q, k, sel)
        elif exact:
            rows, scores = self._scan(q[None], k, sel.mask)[0]
        else:
            rows, scores = self._approximate(q, k, sel)
        return self._hits(rows, scores)

    def search_batch(
        self, queries: np.ndarray, k: int = 10, *, exact: bool = False, **filters: Any
    ) -> list[list[SearchHit]]:
        """:meth:`search` for each row of ``queries``; an exact batch reads the vectors once."""
        qs = np.asarray(queries, np.float32)
        if qs.ndim != 2:
            raise UsageError(f"queries must be (N, {self.dim}), got shape {qs.shape}")
        if not (exact and self.kind == "hnsw"):
            return [self.search(q, k, exact=exact, **filters) for q in qs]
        qs = np.stack([self._query(q) for q in qs]) if len(qs) else qs
        k = _check_k(k)
        where = _with_colour(filters.get("where"), filters.get("colour"))
        sel = self._select(filters.get("category"), where, filters.get("price"))
        if sel.count == 0:
            return [[] for _ in qs]
        return [self._hits(r, s) for r, s in self._scan(qs, min(k, sel.count), sel.mask, sel.rows)]

    def measure_recall(self, queries: np.ndarray, k: int = 10, *, exclude: np.ndarray | None = None) -> float:
        """Recall@k of :meth:`search` against the exact search, over ``queries`` (N, dim). With
        ``exclude`` (one row per query, e.g. queries taken from the index itself) that row is left
        out of both answers."""
        qs = np.asarray(queries, np.float32)
        extra = 0 if exclude is None else 1
        exact = self.search_batch(qs, k + extra, exact=True)
        hits = []
        for i, (q, want) in enumerate(zip(qs, exact, strict=True)):
            got = self.search(q, k + extra)
            drop = {int(exclude[i])} if exclude is not None else set()
            w = [h.row for h in want if h.row not in drop][:k]
            g = {h.row for h in got if h.row not in drop}
            hits.append(len(g & set(w)) / max(1, len(w)))
        return float(np.mean(hits)) if hits else 1.0

    def _query(self, query: np.ndarray) -> np.ndarray:
        try:
            q = np.asarray(query, np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise UsageError(
                f"query must be an embedding vector of {self.dim} numbers, got {type(query).__name__}"
            ) from None
        if q.shape[0] != self.dim:
            raise UsageError(f"query has {q.shape[0]} dimensions, the index {self.dim}")
        if not np.all(np.isfinite(q)):
            raise UsageError("query vector holds NaN or infinity")
        return q

    def _hits(self, rows: np.ndarray, scores: np.ndarray) -> list[SearchHit]:
        order = np.lexsort((rows, -scores))
        return [SearchHit(self.product(int(rows[i])), float(scores[i]), int(rows[i])) for i in order]

    def _select(
        self, category: str | None, where: Mapping[str, str] | None, price: PriceRange | None
    ) -> _Selection:
        """The rows the filters allow (cached: a kiosk repeats its few category filters)."""
        key = (category, tuple(sorted((where or {}).items())), tuple(price) if price is not None else None)
        hit = self._selections.get(key)
        if hit is not None:
            self._selections.move_to_end(key)
            return hit
        if category is not None and category not in self.categories:
            raise UsageError(f"unknown category {category!r}; the index has: {', '.join(self.categories)}")
        conditions = dict(where or {})
        if category is not None:
            conditions["category"] = category
        mask = ~self._removed if self._n_live < self.rows else None
        for name, value in conditions.items():
            if name not in self._columns:
                why = (
                    " (too many distinct values to filter on)"
                    if name in self.manifest.get("unfilterable", ())
                    else ""
                )
                raise UsageError(
                    f"cannot filter on {name!r}{why}; filter columns: {', '.join(self.filter_columns)}"
                )
            code = self._value_code[name].get(str(value))
            m = self._column_codes[name] == code if code is not None else np.zeros(self.rows, bool)
            mask = m if mask is None else mask & m
        if price is not None:
            lo, hi = price
            if lo is not None and hi is not None and lo > hi:
                raise UsageError(f"the price range is empty: minimum {lo} is above maximum {hi}")
            m = ~np.isnan(self._price)
            if lo is not None:
                m &= self._price >= lo
            if hi is not None:
                m &= self._price <= hi
            mask = m if mask is None else mask & m
        n = self._n_live if mask is None else int(mask.sum())
        small = mask is not None and n <= self.FILTER_SCAN_MAX and self._exact is None
        sel = _Selection(mask, np.flatnonzero(mask) if small and mask is not None else None, n)
        self._selections[key] = sel
        if len(self._selections) > 16:
            self._selections.popitem(last=False)
        return sel

    def _rerank(self, q: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.sort(rows)
        scores = self._fmt.decode(self._codes[rows]) @ q
        top = np.argpartition(-scores, k - 1)[:k] if len(rows) > k else np.arange(len(rows))
        return rows[top], scores[top]

    def _subset_top_k(self, q: np.ndarray, k: int, sel: _Selection) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over a small allowed set (a 1 % category): its vectors decoded once."""
        rows = sel.rows if sel.rows is not None else np.empty(0, np.int64)
        vectors = sel.vectors if sel.vectors is not None else self._fmt.decode(self._codes[rows])
        cached = sum(x.vectors.nbytes for x in self._selections.values() if x.vectors is not None)
        if sel.vectors is None and cached + vectors.nbytes <= self.SUBSET_CACHE_BYTES:
            sel.vectors = vectors
        scores = vectors @ q
        top = np.argpartition(-scores, k - 1)[:k] if len(rows) > k else np.arange(len(rows))
        return rows[top], scores[top]

    def _approximate(self, q: np.ndarray, k: int, sel: _Selection) -> tuple[np.ndarray, np.ndarray]:
        """The graph's candidates (scaled up by the share a filter allows), re-ranked exactly. A filter
        that excludes the query's neighbourhood (a shirt photo, trousers only) leaves the graph short:
        it is asked once more for four times as many, then the allowed rows are scanned."""
        graph, basis = self._graph, self._basis
        if graph is None or basis is None:
            raise UsageError("this index has no graph; search it exactly")
        count = min(self.rows, math.ceil(max(self.candidates, 2 * k) * self.rows / max(1, sel.count)))
        head = q @ basis
        while count <= self.MAX_CANDIDATES or sel.mask is None:
            rows = graph.search(head, count)
            rows = rows[(rows >= 0) & (rows < self.rows)]  # rows an interrupted update left in the graph
            rows = rows[~self._removed[rows] if sel.mask is None else sel.mask[rows]]
            if len(rows) >= k or count >= self.rows:
                return self._rerank(q, rows, k)
            count *= 4
        mask = sel.mask if sel.mask is not None else ~self._removed
        return self._scan(q[None], k, mask, np.flatnonzero(mask))[0]

    def _scan(
        self, qs: np.ndarray, k: int, allowed: np.ndarray | None, allowed_rows: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Exact top-k of every query in ``qs`` over the allowed rows, reading codes in chunks."""
        if allowed is None and self._n_live < self.rows:
            allowed = ~self._removed
        if allowed_rows is not None:
            sources: Iterator[np.ndarray] = (allowed_rows[s:e] for s, e in iter_chunks(len(allowed_rows)))
        else:
            step = max(1024, min(CHUNK, (1 << 24) // max(1, len(qs))))
            sources = (np.arange(s, e) for s, e in iter_chunks(self.rows, step))
        best_rows = np.empty((len(qs), 0), np.int64)
        best = np.empty((len(qs), 0), np.float32)
        for rows in sources:
            if allowed is not None and allowed_rows is None:
                rows = rows[allowed[rows]]
            if not len(rows):
                continue
            s = qs @ self._fmt.decode(self._codes[rows]).T  # (queries, rows)
            if len(rows) > k:  # this chunk's own top-k first: the merge stays (queries, 2k)
                top = np.argpartition(-s, k - 1, axis=1)[:, :k]
                chunk_rows, s = rows[top], np.take_along_axis(s, top, 1)
            else:
                chunk_rows = np.broadcast_to(rows, s.shape)
            cand_rows = np.concatenate([best_rows, chunk_rows], axis=1)
            cand = np.concatenate([best, s], axis=1)
            if cand.shape[1] > k:
                top = np.argpartition(-cand, k - 1, axis=1)[:, :k]
                best_rows, best = np.take_along_axis(cand_rows, top, 1), np.take_along_axis(cand, top, 1)
            else:
                best_rows, best = cand_rows, cand
        return [(best_rows[i], best[i]) for i in range(len(qs))]


def _with_colour(where: Mapping[str, str] | None, colour: str | None) -> Mapping[str, str] | None:
    if colour is None:
        return where
    from shoplens.colour import PALETTE

    name = colour.strip().lower()
    if name not in PALETTE:
        raise UsageError(f"unknown colour {colour!r}; the palette: {', '.join(PALETTE)}")
    return {**(where or {}), "colour": name}


def _check_k(k: Any) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
        raise UsageError(f"k must be a positive integer, got {k!r}")
    return int(k)
