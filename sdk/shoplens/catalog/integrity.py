"""An index's integrity: its manifest, its files' sizes and digests, and the model it was built with.

Every reader of an index (``CatalogIndex``, ``index add``/``remove``) checks through these, so a
truncated, replaced or foreign index is one clear error wherever it is opened.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shoplens._manifest import read_manifest
from shoplens.catalog.codes import CodeFormat
from shoplens.errors import DataError, ModelError
from shoplens.internal.atomic import sha256_file

__all__ = ["check_digest", "check_model", "check_size", "read_index_manifest"]


def check_model(root: Path, manifest: Mapping[str, Any], model: Path) -> None:
    """DataError unless ``model`` is the embedding model the index at ``root`` was built with."""
    if not model.is_file():
        raise ModelError(f"embedding model {model} does not exist")
    sha = sha256_file(model)
    if sha != manifest.get("model_sha256"):
        raise DataError(
            f"index {root} was built with another model "
            f"(sha256 {str(manifest.get('model_sha256'))[:12]}...), "
            f"not {model.name} ({sha[:12]}...); rebuild it with 'shoplens index build'"
        )


def read_index_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the index at ``root``, checked for the fields every reader needs."""
    from shoplens.catalog.store import INDEX_FORMAT as fmt

    try:
        manifest = read_manifest(
            root, "index", fmt, ("kind", "dim", "rows", "count", "codes", "codes_file", "files", "columns")
        )
    except DataError as exc:
        if "format 1," in str(exc):
            raise DataError(
                f"index {root} was built by an older ShopLens (format 1); "
                "rebuild it with 'shoplens index build'"
            ) from None
        raise
    try:
        int(manifest["rows"]), int(manifest["dim"]), CodeFormat.from_dict(manifest["codes"])
        if manifest["kind"] not in ("exact", "hnsw"):
            raise ValueError(f"unknown kind {manifest['kind']!r}")
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(f"index manifest {root / 'manifest.json'} is malformed: {exc}") from None
    return manifest


def check_size(path: Path, expected: int, *, exact: bool) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        raise DataError(f"index file {path} is missing; rebuild the index") from None
    if size < expected or (exact and size != expected):
        raise DataError(
            f"index file {path} is {size} bytes, the manifest says {expected}: truncated or replaced"
        )


def check_digest(path: Path, entry: Mapping[str, Any]) -> None:
    from shoplens.catalog.store import file_entry

    if file_entry(path, int(entry["bytes"]))["sha256"] != entry["sha256"]:
        raise DataError(f"index file {path} is corrupt (sha256 differs from the manifest); rebuild the index")
