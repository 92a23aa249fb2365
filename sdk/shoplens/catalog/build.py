"""Building an index: stream a catalog through an embedding model in checkpointed chunks.

Building writes into ``<out>.partial/`` with a checkpoint after every chunk: an interrupted build
resumes from its checkpoint, and memory holds one chunk of images whatever the catalog's size. The
finished directory (:mod:`shoplens.catalog.store`) is renamed into place, so a reader never sees
half an index. :func:`index_from_vectors` indexes embeddings computed elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.catalog.codes import to_codes
from shoplens.catalog.source import CatalogSource, Product, read_catalog
from shoplens.catalog.store import write_index, write_json
from shoplens.data.datasets import read_image
from shoplens.errors import DataError, ModelError, UsageError
from shoplens.internal.atomic import sha256_file
from shoplens.internal.outputs import (
    check_output_dir,
    output_lock,
    publish_output_dir,
    remove_path,
    stage_output_dir,
)
from shoplens.internal.progress import progress

__all__ = ["KINDS", "build_index", "check_kind", "finish_index", "index_from_vectors", "with_colours"]

KINDS = ("auto", "exact", "hnsw")


def check_kind(kind: str) -> str:
    """UsageError for an unknown kind, or for ``hnsw`` without usearch (before any work is done)."""
    if kind not in KINDS:
        raise UsageError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "hnsw":
        from shoplens.catalog import ann

        if not ann.available():
            ann.HnswGraph.new(1, 2, 2)  # raises the UsageError that names the install command
    return kind


def build_index(
    catalog: str | Path,
    embedder_model: str | Path,
    out: str | Path,
    *,
    kind: str = "auto",
    chunk: int = 256,
    overwrite: bool = False,
    show_progress: bool = False,
    stop_after: int | None = None,
    colours: bool = True,
) -> dict[str, Any]:
    """Build (or resume building) the index of ``catalog`` with ``embedder_model`` into ``out``.

    Args:
      kind: ``exact``, ``hnsw`` (a usearch graph; ``shoplens[search]``) or ``auto`` (hnsw from
        50,000 products when usearch is installed).
      colours: name each product's colours from its image (``colour`` and ``colours`` attributes,
        ``search --colour``) unless the catalog has a ``colour`` column.
      stop_after: stop after that many products (tests use it to simulate an interruption; the
        partial build then resumes on the next call).

    Returns the manifest.
    """
    check_kind(kind)
    if chunk < 1:
        raise UsageError(f"chunk must be >= 1, got {chunk}")
    src = read_catalog(catalog)
    out = Path(out)
    if not Path(embedder_model).is_file():
        raise ModelError(f"embedding model {embedder_model} does not exist")
    with output_lock(out):
        check_output_dir(out, overwrite=overwrite, inputs=[src.path, embedder_model])
        return _build(src, Path(embedder_model), out, kind, chunk, show_progress, stop_after, colours)


def _build(
    src: CatalogSource, embedder_model: Path, out: Path, kind: str, chunk: int, show_progress: bool,
    stop_after: int | None, colours: bool,
) -> dict[str, Any]:  # fmt: skip
    from shoplens.colour import ColourOptions
    from shoplens.embedder import Embedder

    model_sha = sha256_file(embedder_model)
    work = out.with_name(out.name + ".partial")
    ckpt_path = work / "checkpoint.json"
    with Embedder.create_from_model_path(embedder_model, colour=ColourOptions(enabled=colours)) as emb:
        dim = emb.dim
        state: dict[str, Any] = {
                 "catalog": str(src.path), "fingerprint": src.fingerprint, "model_sha256": model_sha,
                 "dim": dim, "count": src.count, "done": 0, "kept": 0, "skipped": 0,
                 "products_bytes": 0, "seconds": 0.0}  # fmt: skip
        resumed = False
        if ckpt_path.is_file():
            try:
                old = json.loads(ckpt_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = {}
            same = all(old.get(k) == state[k] for k in ("catalog", "fingerprint", "model_sha256", "dim"))
            if same and (work / "codes.partial.npy").is_file():
                state, resumed = old, True
        if not resumed:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            np.lib.format.open_memmap(work / "codes.partial.npy", mode="w+", dtype=np.int8,
                                      shape=(src.count, dim)).flush()  # fmt: skip
            (work / "products.jsonl").write_bytes(b"")
            write_json(ckpt_path, state)
        codes = np.load(work / "codes.partial.npy", mmap_mode="r+")
        with (work / "products.jsonl").open("r+b") as fh:
            fh.truncate(state["products_bytes"])  # drop lines written after the last checkpoint
        t0 = time.perf_counter() - float(state.get("seconds", 0.0))
        with progress(show_progress, f"indexing {src.path.name}", src.count) as bar:
            bar.advance(state["done"])
            rows = src.rows()
            for _ in range(state["done"]):
                next(rows)
            pending: list[Product] = []

            def flush(batch: list[Product]) -> None:
                kept = state["kept"]
                lines = []
                for prod, vec in _embed(emb, batch, state):
                    codes[kept] = to_codes(vec[None])[0]
                    lines.append(json.dumps(prod.to_dict(), separators=(",", ":")) + "\n")
                    kept += 1
                codes.flush()
                with (work / "products.jsonl").open("ab") as f:
                    f.write("".join(lines).encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())
                state["kept"] = kept
                state["done"] += len(batch)
                state["products_bytes"] = (work / "products.jsonl").stat().st_size
                state["seconds"] = round(time.perf_counter() - t0, 2)
                write_json(ckpt_path, state)
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
        manifest = finish_index(work, kept, {
            "model_sha256": model_sha, "model_path": str(Path(embedder_model).resolve()),
            "skipped": state["skipped"], "catalog": str(src.path),
            "build_seconds": round(time.perf_counter() - t0, 2), "resumed": resumed,
        }, kind=kind, show_progress=show_progress)  # fmt: skip
    publish_output_dir(work, out, command="index build")
    return manifest


def _embed(emb: Any, batch: Sequence[Product], state: dict[str, Any]) -> Iterable[tuple[Product, np.ndarray]]:
    """(product, unit vector) for each product whose image can be read; the rest are counted. A
    product without a ``colour`` attribute gets the colours the Embedder names (when it names any)."""
    for prod in batch:
        img = read_image(Path(prod.image))
        if img is None:
            state["skipped"] += 1
            continue
        r = emb.embed(img)
        if r.embedding is None:  # pragma: no cover - the quality gate is off by default
            state["skipped"] += 1
            continue
        yield with_colours(prod, r.colours), r.embedding


def with_colours(prod: Product, colours: Sequence[Any]) -> Product:
    """``prod`` with ``colour`` (the dominant name) and ``colours`` ("red 62%, white 31%") among its
    attributes, unless the catalog gave a colour (its ``colour`` or ``color`` column wins)."""
    attrs = dict(prod.attributes)
    given = attrs.pop("color", None)
    if given is not None and "colour" not in attrs:
        attrs["colour"] = given
    if "colour" in attrs:
        attrs["colour"] = attrs["colour"].strip().lower()
    elif colours:
        attrs["colour"] = colours[0].name
        attrs["colours"] = ", ".join(f"{c.name} {round(100 * c.share)}%" for c in colours)
    return Product(prod.id, prod.image, prod.category, prod.price, attrs)


def finish_index(
    work: Path, kept: int, fields: dict[str, Any], *, kind: str = "auto", show_progress: bool = False
) -> dict[str, Any]:
    """Turn a work folder (``codes.partial.npy`` with ``kept`` filled rows, ``products.jsonl``)
    into a finished index: packed codes, columns, the graph, the manifest. Every builder ends here."""
    partial = np.load(work / "codes.partial.npy", mmap_mode="r")
    manifest = write_index(work, partial[:kept], work / "products.jsonl", fields, kind=kind,
                           show_progress=show_progress)  # fmt: skip
    del partial
    (work / "codes.partial.npy").unlink()
    (work / "checkpoint.json").unlink(missing_ok=True)
    return manifest


def index_from_vectors(
    vectors: np.ndarray,
    products: Sequence[Product],
    out: str | Path,
    *,
    model: str | Path,
    kind: str = "auto",
    overwrite: bool = False,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Index embeddings computed elsewhere (``vectors[i]`` is ``products[i]``'s unit embedding by
    ``model``, whose sha256 the index records). Returns the manifest."""
    check_kind(kind)
    v = np.asarray(vectors) if not isinstance(vectors, np.memmap) else vectors
    if v.ndim != 2 or len(v) != len(products) or len(v) == 0:
        raise UsageError(f"vectors must be (N, dim) for N = {len(products)} products, got {v.shape}")
    ids = [p.id for p in products]
    if len(set(ids)) != len(ids):
        raise UsageError("product ids must be unique")
    model = Path(model)
    if not model.is_file():
        raise ModelError(f"embedding model {model} does not exist")
    out = Path(out)
    t0 = time.perf_counter()
    with output_lock(out):
        stage = stage_output_dir(out, overwrite=overwrite, inputs=[model])
        try:
            codes = np.lib.format.open_memmap(
                stage / "codes.partial.npy", mode="w+", dtype=np.int8, shape=v.shape
            )
            for s in range(0, len(v), 65_536):
                chunk = np.asarray(v[s : s + 65_536], np.float32)
                if not np.all(np.isfinite(chunk)):
                    raise UsageError(f"vectors {s}..{s + len(chunk) - 1} hold NaN or infinity")
                codes[s : s + len(chunk)] = to_codes(chunk)
            codes.flush()
            del codes
            with (stage / "products.jsonl").open("w", encoding="utf-8") as fh:
                for p in products:
                    fh.write(json.dumps(p.to_dict(), separators=(",", ":")) + "\n")
            manifest = finish_index(stage, len(v), {
                "model_sha256": sha256_file(model), "model_path": str(model.resolve()), "skipped": 0,
                "catalog": "vectors", "build_seconds": round(time.perf_counter() - t0, 2), "resumed": False,
            }, kind=kind, show_progress=show_progress)  # fmt: skip
            publish_output_dir(stage, out, command="index from vectors")
        except BaseException:
            remove_path(stage)
            raise
    return manifest
