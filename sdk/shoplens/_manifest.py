"""Reading the ``manifest.json`` of a ShopLens directory (device bundle, catalog index)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shoplens.errors import DataError

__all__ = ["read_manifest"]


def read_manifest(root: Path, kind: str, fmt: int, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The manifest of ``root``; DataError when it is missing, malformed, or of another format."""
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise DataError(f"{root} is not a ShopLens {kind} (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise TypeError("not a JSON object")
        for key in required:
            manifest[key]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{kind} manifest {mpath} is unreadable or malformed: {exc}") from None
    if manifest.get("format") != fmt:
        raise DataError(f"{root}: {kind} format {manifest.get('format')!r}, this ShopLens reads {fmt}")
    return manifest
