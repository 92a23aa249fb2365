"""Adding and removing products without a rebuild (``shoplens index add`` / ``index remove``).

An update holds the index's lock, appends past the committed sizes (or writes a whole file it
changes under a new generation), and commits by replacing ``manifest.json``; the files the new
manifest no longer names are deleted afterwards. A reader that opened the index before keeps its
view (its memory maps hold the old files); one that opens it after sees the whole update. A
removed product is marked in the removed-rows bitmap, which every search path honours, and in
the graph (usearch marks it deleted, so it is never proposed again).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.catalog.build import _embed
from shoplens.catalog.codes import CodeFormat, to_codes, unit
from shoplens.catalog.integrity import check_model, read_index_manifest
from shoplens.catalog.source import Product, read_catalog
from shoplens.catalog.store import ColumnBuilder, file_entry, iter_chunks, used_values, write_json
from shoplens.errors import DataError, UsageError
from shoplens.internal.outputs import output_lock, write_marker
from shoplens.internal.progress import progress

__all__ = ["add_products", "add_vectors", "remove_products"]


def _live_ids(root: Path, manifest: dict[str, Any]) -> dict[str, int]:
    """id -> row of every product in the index that is not removed."""
    rows = int(manifest["rows"])
    removed = np.unpackbits(np.fromfile(root / manifest["removed_file"], np.uint8), count=rows).astype(bool)
    offsets = np.fromfile(root / "offsets.bin", np.uint64, count=rows + 1)
    ids: dict[str, int] = {}
    with (root / "products.jsonl").open("rb") as fh:
        for row in range(rows):
            line = fh.readline()
            if not removed[row]:
                try:
                    ids[str(json.loads(line)["id"])] = row
                except (ValueError, KeyError, TypeError):
                    raise DataError(
                        f"index products {root / 'products.jsonl'} row {row} is corrupt"
                    ) from None
        if fh.tell() != int(offsets[rows]):
            raise DataError(f"index products {root / 'products.jsonl'} do not match offsets.bin")
    return ids


def add_products(
    index: str | Path,
    catalog: str | Path,
    *,
    model: str | Path | None = None,
    replace: bool = False,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Embed the products of ``catalog`` and add them to the index at ``index``.

    Args:
      model: the embedding model (default: the one the index names; another one is refused).
      replace: a product id already in the index is replaced (else DataError, nothing changed).

    Returns a summary: added, replaced, skipped (unreadable images), products, seconds.
    """
    from shoplens.colour import ColourOptions
    from shoplens.embedder import Embedder

    root = Path(index)
    t0 = time.perf_counter()
    manifest = read_index_manifest(root)
    model_path = _model_of(root, manifest, model)
    src = read_catalog(catalog)
    new = list(src.rows())
    _refuse_again(new, _live_ids(root, manifest), replace)  # before an hour of embedding, not after
    state = {"skipped": 0}
    kept: list[Product] = []
    vecs: list[np.ndarray] = []
    with Embedder.create_from_model_path(model_path, colour=ColourOptions(enabled=True)) as emb:
        if emb.dim != int(manifest["dim"]):
            raise DataError(f"{model_path} embeds {emb.dim}-d vectors, the index holds {manifest['dim']}-d")
        with progress(show_progress, f"embedding {src.path.name}", len(new)) as bar:
            for s, e in iter_chunks(len(new), 256):
                for prod, vec in _embed(emb, new[s:e], state):
                    kept.append(prod)
                    vecs.append(vec)
                bar.advance(e - s)
    if not kept:
        raise DataError(f"none of the {len(new)} catalog images in {src.path} could be read")
    r = add_vectors(root, np.stack(vecs), kept, model=model_path, replace=replace,
                    show_progress=show_progress)  # fmt: skip
    return {**r, "skipped": state["skipped"], "seconds": round(time.perf_counter() - t0, 2)}


def add_vectors(
    index: str | Path,
    vectors: np.ndarray,
    products: list[Product],
    *,
    model: str | Path | None = None,
    replace: bool = False,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Add products whose unit embeddings were computed elsewhere (by the index's model: ``model``,
    when given, is checked against it). See :func:`add_products`."""
    root = Path(index)
    v = np.asarray(vectors, np.float32)
    if v.ndim != 2 or len(v) != len(products) or len(v) == 0:
        raise UsageError(f"vectors must be (N, dim) for N = {len(products)} products, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise UsageError("vectors hold NaN or infinity")
    ids = [p.id for p in products]
    if len(set(ids)) != len(ids):
        raise UsageError("product ids must be unique")
    with output_lock(root):
        manifest = read_index_manifest(root)
        if model is not None:
            check_model(root, manifest, Path(model))
        if v.shape[1] != int(manifest["dim"]):
            raise UsageError(f"vectors are {v.shape[1]}-d, the index holds {manifest['dim']}-d")
        live = _live_ids(root, manifest)
        _refuse_again(products, live, replace)
        replaced = [live[p.id] for p in products if p.id in live]
        _commit_add(root, manifest, to_codes(v), products, replaced, show_progress)
    return {"added": len(products) - len(replaced), "replaced": len(replaced),
            "products": int(manifest["count"]) + len(products) - len(replaced)}  # fmt: skip


def _refuse_again(products: list[Product], live: dict[str, int], replace: bool) -> None:
    again = [p.id for p in products if p.id in live]
    if again and not replace:
        raise DataError(
            f"{len(again)} of the {len(products)} products are already in the index "
            f"(first: {again[0]!r}); pass --replace to update them"
        )


def _model_of(root: Path, manifest: dict[str, Any], model: str | Path | None) -> Path:
    path = Path(model) if model is not None else None
    if path is None:
        if not manifest.get("model_path"):
            raise DataError(f"{root} names no embedding model; pass --model")
        path = Path(str(manifest["model_path"]))
    check_model(root, manifest, path)
    return path


def remove_products(index: str | Path, ids: Iterable[str]) -> dict[str, Any]:
    """Remove products by id; DataError (nothing changed) if any id is not in the index."""
    root = Path(index)
    wanted = list(dict.fromkeys(str(i) for i in ids))
    if not wanted:
        raise UsageError("no product ids to remove")
    with output_lock(root):
        manifest = read_index_manifest(root)
        live = _live_ids(root, manifest)
        missing = [i for i in wanted if i not in live]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise DataError(f"product {missing[0]!r}{more} is not in the index {root}; nothing was removed")
        _commit(root, manifest, new_rows=0, removed_rows=[live[i] for i in wanted], changes={})
    return {"removed": len(wanted), "products": int(manifest["count"]) - len(wanted)}


# -- the commit protocol --------------------------------------------------------------------------
def _truncate(path: Path, size: int) -> None:
    with path.open("r+b") as fh:
        fh.truncate(size)


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _commit_add(
    root: Path, manifest: dict[str, Any], codes: np.ndarray, products: list[Product], replaced: list[int],
    show_progress: bool,
) -> None:  # fmt: skip
    rows0 = int(manifest["rows"])
    gen = int(manifest["generation"]) + 1
    files = manifest["files"]
    changes: dict[str, Any] = {}
    # appended files first lose what an interrupted update left past the committed sizes
    for name in ("offsets.bin", "products.jsonl", "price.bin", manifest["codes_file"],
                 *(c["file"] for c in manifest["columns"])):  # fmt: skip
        _truncate(root / name, int(files[name]["bytes"]))
    fmt = CodeFormat.from_dict(manifest["codes"])
    lo, hi = int(codes.min()), int(codes.max())
    if fmt.holds(lo, hi):
        _append(root / manifest["codes_file"], fmt.pack(codes).tobytes())
    else:  # the new codes need more bits: repack every row into a new file
        wider = CodeFormat.fit(fmt.dim, min(lo, -fmt.offset), max(hi, (1 << fmt.bits) - 1 - fmt.offset))
        old = np.memmap(root / manifest["codes_file"], np.uint8, "r", shape=(rows0, fmt.row_bytes))
        name = f"codes-{gen}.bin"
        with (root / name).open("wb") as fh:
            for s, e in iter_chunks(rows0):
                fh.write(wider.pack(fmt.unpack(old[s:e]).astype(np.int8)).tobytes())
            fh.write(wider.pack(codes).tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        del old
        changes["codes"] = wider.to_dict()
        changes["codes_file"] = name
        fmt = wider
    offsets_end = int(np.fromfile(root / "offsets.bin", np.uint64, count=rows0 + 1)[rows0])
    lines = [(json.dumps(p.to_dict(), separators=(",", ":")) + "\n").encode("utf-8") for p in products]
    new_offsets = offsets_end + np.cumsum([len(x) for x in lines], dtype=np.uint64)
    _append(root / "products.jsonl", b"".join(lines))
    _append(root / "offsets.bin", new_offsets.astype(np.uint64).tobytes())
    cols = ColumnBuilder(manifest["columns"], manifest.get("unfilterable", []))
    for p in products:
        cols.add(p)
    _append(root / "price.bin", np.asarray(cols.prices, np.float32).tobytes())
    columns: list[dict[str, Any]] = []
    old_cols = {c["name"]: c for c in manifest["columns"]}
    for c in cols.finished_columns():
        before = old_cols.get(c["name"])
        new_codes = cols.new_codes(c["name"])
        if before is not None and before["dtype"] == c["dtype"]:
            _append(root / c["file"], new_codes.astype(c["dtype"]).tobytes())
        else:  # a new column (old rows: no value) or one that outgrew uint8: a whole new file
            old_codes = np.zeros(rows0, np.int64)
            if before is not None:
                old_codes = np.fromfile(root / before["file"], before["dtype"], count=rows0).astype(np.int64)
            c = {**c, "file": f"col-{len(old_cols) + len(columns)}-{gen}.bin"}
            np.concatenate([old_codes.astype(np.int64), new_codes]).astype(c["dtype"]).tofile(
                root / c["file"]
            )
        columns.append(c)
    changes["columns"] = columns
    changes["unfilterable"] = sorted(cols.unfilterable)
    _commit(root, manifest, new_rows=len(products), removed_rows=replaced, changes=changes, codes=codes,
            fmt=fmt, show_progress=show_progress)  # fmt: skip


def _commit(
    root: Path,
    manifest: dict[str, Any],
    *,
    new_rows: int,
    removed_rows: list[int],
    changes: dict[str, Any],
    codes: np.ndarray | None = None,
    fmt: CodeFormat | None = None,
    show_progress: bool = False,
) -> None:
    """Write the removed bitmap and the graph of the next generation, then the manifest."""
    rows0 = int(manifest["rows"])
    rows = rows0 + new_rows
    gen = int(manifest["generation"]) + 1
    removed = np.zeros(rows, bool)
    removed[:rows0] = np.unpackbits(
        np.fromfile(root / manifest["removed_file"], np.uint8), count=rows0
    ).astype(bool)
    removed[np.asarray(removed_rows, np.int64)] = True
    removed_file = f"removed-{gen}.bin"
    np.packbits(removed).tofile(root / removed_file)
    m = {
        **manifest, **changes, "rows": rows, "count": int(rows - removed.sum()),
        "removed": int(removed.sum()),
        "generation": gen, "removed_file": removed_file,
    }  # fmt: skip
    dropped = {manifest["removed_file"]}
    if manifest["kind"] == "hnsw":
        from shoplens.catalog.ann import HnswGraph

        a = dict(manifest["ann"])
        entry = manifest["files"][a["graph"]]
        graph = HnswGraph.load(root / a["graph"], size=int(entry["bytes"]), sha256=entry["sha256"])
        graph.drop_from(rows0)
        graph.remove(np.asarray(removed_rows, np.int64))
        if new_rows and codes is not None and fmt is not None:
            basis = np.fromfile(root / "basis.bin", np.float32).reshape(
                int(manifest["dim"]), int(a["head_dims"])
            )
            with progress(show_progress, "linking the new products", new_rows) as bar:
                for s, e in iter_chunks(new_rows, 16_384):
                    heads = unit(codes[s:e]) @ basis
                    graph.add(np.arange(rows0 + s, rows0 + e), heads)
                    bar.advance(e - s)
        dropped.add(a["graph"])
        a["graph"] = f"graph-{gen}.usearch"
        graph.save(root / a["graph"])
        m["ann"] = a
    names = {"offsets.bin", "products.jsonl", "price.bin", removed_file, m["codes_file"],
             *(c["file"] for c in m["columns"])}  # fmt: skip
    if m["kind"] == "hnsw":
        names |= {"basis.bin", m["ann"]["graph"]}
    row_bytes = CodeFormat.from_dict(m["codes"]).row_bytes
    sizes = {"offsets.bin": (rows + 1) * 8, "price.bin": rows * 4, m["codes_file"]: rows * row_bytes,
             "products.jsonl": int(np.fromfile(root / "offsets.bin", np.uint64, count=rows + 1)[rows]),
             **{c["file"]: rows * np.dtype(c["dtype"]).itemsize for c in m["columns"]}}  # fmt: skip
    m["files"] = {n: file_entry(root / n, sizes.get(n)) for n in sorted(names)}
    dropped |= set(manifest["files"]) - names
    col = next((c for c in m["columns"] if c["name"] == "category"), None)
    if col is not None:
        cat = np.fromfile(root / col["file"], col["dtype"], count=rows)
        m["categories"] = used_values(m["columns"], "category", cat[~removed])
    write_json(root / "manifest.json", m)  # the commit
    for name in dropped - names:
        (root / name).unlink(missing_ok=True)
    write_marker(root, command="index update")
