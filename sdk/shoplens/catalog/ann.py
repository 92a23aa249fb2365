"""The approximate-nearest-neighbour engine of large indexes: a usearch HNSW graph (optional extra).

This is the only module that imports ``usearch`` (``pip install 'shoplens[search]'``); exact
indexes and ``import shoplens`` never need it. The graph holds, per product, a short int8 vector:
the first ``head_dims`` components of the unit embedding in the catalog's principal basis (the
head carries most of the energy of an embedding, so its neighbours are the true neighbours' best
candidates), plus its links. It proposes candidates; the index re-ranks them exactly with the
stored codes (see :mod:`shoplens.catalog.codes`). The keys are the products' rows.

usearch memory-maps a saved graph (``view``) and trusts its bytes, so :func:`open_graph` checks the
file's size and sha256 against the manifest first: a truncated or corrupt graph is a one-line
DataError, never a crash inside the library.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.errors import DataError, UsageError

__all__ = ["HnswGraph", "available", "library_version"]

METRIC = "cos"
DTYPE = "i8"


def _usearch() -> Any:
    try:
        from usearch import index as uindex
    except ImportError:
        raise UsageError(
            "an HNSW index needs usearch: pip install 'shoplens[search]' (or build with --kind exact)"
        ) from None
    return uindex


def available() -> bool:
    """True when usearch is installed."""
    try:
        _usearch()
    except UsageError:
        return False
    return True


def library_version() -> str:
    import usearch

    return f"usearch {usearch.__version__}"


class HnswGraph:
    """A usearch index over head vectors, keyed by row; opened read-only (memory-mapped) for
    search, or loaded into memory for an update."""

    def __init__(self, index: Any, *, writable: bool) -> None:
        self._index = index
        self.writable = writable

    # -- making ---------------------------------------------------------------------------
    @classmethod
    def new(cls, head_dims: int, connectivity: int, expansion_add: int) -> HnswGraph:
        u = _usearch()
        return cls(u.Index(ndim=head_dims, metric=METRIC, dtype=DTYPE, connectivity=connectivity,
                           expansion_add=expansion_add), writable=True)  # fmt: skip

    @classmethod
    def load(cls, path: Path, *, size: int, sha256: str) -> HnswGraph:
        """The graph in memory, to add or remove (checked like :meth:`open`)."""
        return cls(_restore(path, size, sha256, view=False), writable=True)

    @classmethod
    def open(cls, path: Path, *, size: int, sha256: str) -> HnswGraph:
        """The graph memory-mapped, read-only."""
        return cls(_restore(path, size, sha256, view=True), writable=False)

    def add(self, rows: np.ndarray, heads: np.ndarray, *, threads: int = 0) -> None:
        self._require_writable()
        self._index.add(np.asarray(rows, np.uint64), np.ascontiguousarray(heads, np.float32), threads=threads)

    def remove(self, rows: np.ndarray) -> None:
        self._require_writable()
        present = np.asarray(rows, np.uint64)
        present = present[np.asarray(self._index.contains(present), bool).reshape(-1)]
        if len(present):
            self._index.remove(present)

    def drop_from(self, first_row: int) -> None:
        """Forget rows >= ``first_row`` (an update interrupted before its commit added them)."""
        keys = np.asarray(self._index.keys, np.uint64) if len(self._index) else np.empty(0, np.uint64)
        extra = keys[keys >= first_row]
        if len(extra):
            self._index.remove(extra)

    def save(self, path: Path) -> None:
        """Write the graph to ``path`` (the caller renames it into place)."""
        try:
            self._index.save(str(path))
        except (RuntimeError, OSError) as exc:
            raise DataError(f"cannot write index graph {path}: {exc}") from None

    def _require_writable(self) -> None:
        if not self.writable:  # usearch crashes on a write to a memory-mapped view
            raise UsageError("this graph is opened read-only; load it to update it")

    # -- searching ------------------------------------------------------------------------
    def search(self, head: np.ndarray, count: int) -> np.ndarray:
        """Rows of the ``count`` nearest heads (fewer if the graph is smaller), one thread."""
        idx = self._index
        idx.expansion_search = max(count, 16)
        m = idx.search(np.ascontiguousarray(head, np.float32), count, threads=1)
        return np.asarray(m.keys, np.int64)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)


def _restore(path: Path, size: int, sha256: str, *, view: bool) -> Any:
    """A usearch index from its file, checked first (size and sha256); DataError when unreadable."""
    _check_file(path, size, sha256)
    try:
        index = _usearch().Index.restore(str(path), view=view)
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"index graph {path} cannot be read: {exc}") from None
    if index is None:
        raise DataError(f"index graph {path} is not a usearch index")
    return index


def _check_file(path: Path, size: int, sha256: str) -> None:
    from shoplens.internal.atomic import sha256_file

    try:
        actual = path.stat().st_size
    except OSError:
        raise DataError(f"index graph {path} is missing; rebuild the index") from None
    if actual != size:
        raise DataError(
            f"index graph {path} is {actual} bytes, the manifest says {size}: truncated or replaced"
        )
    if sha256_file(path) != sha256:
        raise DataError(
            f"index graph {path} is corrupt (sha256 differs from the manifest); rebuild the index"
        )


def cpu_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
