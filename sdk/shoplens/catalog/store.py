"""The files of a catalog index (format 2), written once by a build and appended to by updates.

An index directory holds::

    manifest.json      the commit point: format, kind, counts, code format, columns, model sha256,
                       and every file's size and sha256
    codes.bin          rows x row_bytes packed vector codes (shoplens.catalog.codes)
    products.jsonl     one product record per row; offsets.bin: rows + 1 uint64 byte offsets
    col-N.bin          one per filter column (category, brand, ...): uint8 or uint16 value codes
    price.bin          float32 per row (NaN: no price)
    removed-G.bin      removed rows, one bit each (rewritten whole by each removal)
    basis.bin          (hnsw) the principal basis the graph's head vectors are taken in
    graph-G.usearch    (hnsw) the usearch graph (shoplens.catalog.ann)

Every array is raw little-endian with its row count in the manifest, so readers memory-map them
and page in only what a search touches. An update appends past the manifest's counts, writes
whole files it changes under a new generation ``G``, and commits by replacing ``manifest.json``;
bytes past the committed sizes (an interrupted update) are ignored by readers and cut by the next
update. A reader never sees half an update.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.catalog.codes import CodeFormat
from shoplens.catalog.source import Product
from shoplens.errors import DataError
from shoplens.internal.atomic import sha256_file
from shoplens.internal.progress import progress

__all__ = [
    "HEAD_DIMS",
    "HNSW_FROM",
    "INDEX_FORMAT",
    "MAX_COLUMN_VALUES",
    "ColumnBuilder",
    "codes_rows",
    "file_entry",
    "principal_basis",
    "used_values",
    "write_index",
    "write_json",
]

INDEX_FORMAT = 2
HNSW_FROM = 50_000  # kind "auto": an HNSW graph from this many products on, an exact scan below
HEAD_DIMS = 16  # the graph's vectors: the first principal components (int8), 16 or more
HEAD_ENERGY = 0.975  # ... as many as hold this share of the catalog's energy (measured: docs/search.md)
CONNECTIVITY = 8
EXPANSION_ADD = 128
CANDIDATES = 128  # graph candidates re-ranked per query; each build measures its own (calibrate)
CALIBRATION_TARGET = 0.995
MAX_COLUMN_VALUES = 65_535  # a column with more distinct values (ids, titles) is not a filter column
CHUNK = 65_536


def file_entry(path: Path, nbytes: int | None = None) -> dict[str, Any]:
    """A manifest's record of a file: its size and sha256 (of the first ``nbytes`` if given)."""
    size = path.stat().st_size if nbytes is None else nbytes
    if nbytes is None or nbytes == path.stat().st_size:
        digest = sha256_file(path)
    else:
        import hashlib

        h = hashlib.sha256()
        with path.open("rb") as fh:
            left = nbytes
            while left > 0:
                block = fh.read(min(left, 1 << 20))
                if not block:
                    break
                h.update(block)
                left -= len(block)
        digest = h.hexdigest()
    return {"bytes": int(size), "sha256": digest}


def write_json(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and rename it (the manifest is the commit point)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, indent=1) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# -- columns ------------------------------------------------------------------------------------
class ColumnBuilder:
    """Value codes of the filter columns (category and the catalog's attributes) and prices."""

    def __init__(self, columns: list[dict[str, Any]] | None = None, unfilterable: list[str] | None = None):
        self.columns: list[dict[str, Any]] = [dict(c, values=list(c["values"])) for c in (columns or [])]
        self._lookup = {c["name"]: {v: i for i, v in enumerate(c["values"])} for c in self.columns}
        self._codes: dict[str, list[int]] = {c["name"]: [] for c in self.columns}
        self.unfilterable = set(unfilterable or [])
        self.prices: list[float] = []
        self.rows = 0
        if not self.columns:
            self._add_column("category")

    def _add_column(self, name: str) -> None:
        self.columns.append({"name": name, "file": f"col-{len(self.columns)}.bin", "values": [""]})
        self._lookup[name] = {"": 0}
        self._codes[name] = [0] * self.rows  # rows before the column appeared had no value

    def add(self, p: Product) -> None:
        for key in p.attributes:
            if key not in self._lookup and key not in self.unfilterable and key != "category":
                self._add_column(key)
        for c in self.columns:
            name = c["name"]
            if name in self.unfilterable:
                continue
            value = p.category if name == "category" else str(p.attributes.get(name, ""))
            lookup = self._lookup[name]
            code = lookup.get(value)
            if code is None:
                if len(lookup) > MAX_COLUMN_VALUES:
                    self.unfilterable.add(name)
                    continue
                code = lookup[value] = len(lookup)
                c["values"].append(value)
            self._codes[name].append(code)
        self.prices.append(np.nan if p.price is None else float(p.price))
        self.rows += 1

    def finished_columns(self) -> list[dict[str, Any]]:
        out = []
        for c in self.columns:
            if c["name"] in self.unfilterable:
                continue
            out.append({**c, "dtype": "uint8" if len(c["values"]) <= 256 else "uint16"})
        return out

    def new_codes(self, name: str) -> np.ndarray:
        return np.asarray(self._codes[name], np.int64)


# -- the basis and the graph ---------------------------------------------------------------------
def principal_basis(sample: np.ndarray) -> tuple[np.ndarray, int, float]:
    """The graph's basis: the largest (uncentred) principal components of ``sample`` (unit vectors),
    as few as hold ``HEAD_ENERGY`` of its energy (at least ``HEAD_DIMS``, at most 64, in steps of 8).

    Returns (basis (dim, head) float32, head, the energy share it holds)."""
    s = np.asarray(sample, np.float64)
    w, basis = np.linalg.eigh(s.T @ s)
    order = np.argsort(-w)
    share = np.cumsum(np.clip(w[order], 0, None)) / max(float(np.clip(w, 0, None).sum()), 1e-12)
    dim = s.shape[1]
    head = min(HEAD_DIMS, dim)
    while head < min(64, dim) and share[head - 1] < HEAD_ENERGY:
        head = min(head + 8, dim)
    return np.ascontiguousarray(basis[:, order[:head]], np.float32), head, float(share[head - 1])


def iter_chunks(n: int, size: int = CHUNK) -> Iterator[tuple[int, int]]:
    for s in range(0, n, size):
        yield s, min(n, s + size)


# -- writing a whole index -----------------------------------------------------------------------
def write_index(
    work: Path,
    codes: np.ndarray,
    products_path: Path,
    fields: dict[str, Any],
    *,
    kind: str,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Turn ``codes`` (rows x dim int8, may be a memory map) and ``products_path`` (one JSON record
    per row, already in ``work``) into a finished index in ``work``; returns its manifest."""
    from shoplens.catalog import ann

    n, dim = codes.shape
    if kind == "auto":
        kind = "hnsw" if n >= HNSW_FROM and ann.available() else "exact"
        if n >= HNSW_FROM and kind == "exact":
            fields = {
                **fields,
                "note": "usearch is not installed: an exact index (pip install 'shoplens[search]')",
            }
    elif kind == "hnsw" and not ann.available():
        ann.HnswGraph.new(1, 2, 2)  # raises the UsageError that names the install command
    t0 = time.perf_counter()
    lo, hi = 0, 0
    for s, e in iter_chunks(n):
        c = np.asarray(codes[s:e])
        lo, hi = min(lo, int(c.min())), max(hi, int(c.max()))
    fmt = CodeFormat.fit(dim, lo, hi)
    with (work / "codes.bin").open("wb") as fh:
        for s, e in iter_chunks(n):
            fh.write(fmt.pack(np.asarray(codes[s:e])).tobytes())
    cols = ColumnBuilder(unfilterable=["colours"])  # "red 62%, white 31%": a description, not a filter
    offsets = np.empty(n + 1, np.uint64)
    offsets[0] = 0
    pos = 0
    with products_path.open("rb") as fh:
        for i, line in enumerate(fh):
            if i >= n:
                raise DataError(f"{products_path} holds more product records than vectors ({n})")
            cols.add(Product.from_dict(json.loads(line)))
            pos += len(line)
            offsets[i + 1] = pos
    if cols.rows != n:
        raise DataError(f"{products_path} holds {cols.rows} product records for {n} vectors")
    offsets.tofile(work / "offsets.bin")
    columns = cols.finished_columns()
    for col in columns:
        cols.new_codes(col["name"]).astype(col["dtype"]).tofile(work / col["file"])
    np.asarray(cols.prices, np.float32).tofile(work / "price.bin")
    removed_file = "removed-0.bin"
    np.packbits(np.zeros(n, bool)).tofile(work / removed_file)
    seconds = time.perf_counter() - t0
    files = [
        "codes.bin",
        "offsets.bin",
        "products.jsonl",
        "price.bin",
        removed_file,
        *(c["file"] for c in columns),
    ]
    ann_doc: dict[str, Any] | None = None
    t1 = time.perf_counter()
    if kind == "hnsw":
        rng = np.random.default_rng(0)
        sample_rows = np.sort(rng.choice(n, min(n, 20_000), replace=False))
        basis, head, energy = principal_basis(fmt.decode(np.asarray(codes_rows(work, fmt, sample_rows))))
        basis.tofile(work / "basis.bin")
        graph = ann.HnswGraph.new(head, CONNECTIVITY, EXPANSION_ADD)
        packed = np.memmap(work / "codes.bin", np.uint8, "r", shape=(n, fmt.row_bytes))
        with progress(show_progress, "linking the HNSW graph", n) as bar:
            for s, e in iter_chunks(n, 16_384):
                graph.add(np.arange(s, e), fmt.decode(packed[s:e]) @ basis, threads=ann.cpu_threads())
                bar.advance(e - s)
        del packed
        graph.save(work / "graph-0.usearch")
        files += ["basis.bin", "graph-0.usearch"]
        ann_doc = {"library": ann.library_version(), "metric": ann.METRIC, "dtype": ann.DTYPE,
                   "head_dims": head, "head_energy": round(energy, 4), "connectivity": CONNECTIVITY,
                   "expansion_add": EXPANSION_ADD, "candidates": CANDIDATES,
                   "graph": "graph-0.usearch"}  # fmt: skip
    manifest = {
        "format": INDEX_FORMAT, "kind": kind, "dim": dim, "rows": n, "count": n, "removed": 0,
        "generation": 0, "codes": fmt.to_dict(), "codes_file": "codes.bin", "columns": columns,
        "unfilterable": sorted(cols.unfilterable), "removed_file": removed_file, "ann": ann_doc,
        **fields,
        "categories": used_values(columns, "category", cols.new_codes("category")),
        "build_seconds": round(float(fields.get("build_seconds", 0)) + seconds + time.perf_counter() - t1, 2),
        "files": {f: file_entry(work / f) for f in files},
    }  # fmt: skip
    if ann_doc is not None:  # the graph's candidate count, measured on this very catalog
        from shoplens.catalog.index import CatalogIndex

        ann_doc.update(calibrate(CatalogIndex(work, manifest)))
    write_json(work / "manifest.json", manifest)
    return manifest


def calibrate(index: Any, *, queries: int = 200, target: float = CALIBRATION_TARGET) -> dict[str, Any]:
    """The fewest graph candidates whose recall@10 reaches ``target`` on a sample of the catalog's own
    vectors as queries (each query's own row left out); the recall at each count tried."""
    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(index.rows, min(queries, index.rows), replace=False))
    qs = index.vectors(rows)
    tried: dict[str, float] = {}
    chosen = None
    for count in (32, 64, 128, 256, 512, 1024):
        index.candidates = count
        tried[str(count)] = round(index.measure_recall(qs, 10, exclude=rows), 4)
        if tried[str(count)] >= target:
            chosen = count
            break
    return {"candidates": chosen or 1024, "calibration": {"queries": len(rows), "recall_at_10": tried}}


def used_values(columns: list[dict[str, Any]], name: str, codes: np.ndarray) -> list[str]:
    """The sorted values of column ``name`` that ``codes`` use."""
    for c in columns:
        if c["name"] == name:
            return sorted(c["values"][int(i)] for i in np.unique(codes))
    return []


def codes_rows(work: Path, fmt: CodeFormat, rows: np.ndarray) -> np.ndarray:
    """Packed code rows ``rows`` of ``work/codes.bin`` (a memory map, so only they are read)."""
    size = (work / "codes.bin").stat().st_size // fmt.row_bytes
    packed: np.ndarray = np.memmap(work / "codes.bin", np.uint8, "r", shape=(size, fmt.row_bytes))[rows]
    return packed
