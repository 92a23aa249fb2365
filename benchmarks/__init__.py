"""ShopLens benchmarks (`make bench`): see benchmarks/__main__.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "sample_apps" / "reference_model"


def reference_key(*extra: object) -> str:
    """A short digest of the reference model, its contract and ``extra`` build settings.

    Models the benchmarks derive from the reference model are cached under this key, so a retrained
    model or a changed contract never reuses a stale conversion.
    """
    h = hashlib.sha256()
    for name in ("product_cnn.keras", "contract.json"):
        h.update((REF / name).read_bytes())
    h.update(repr(extra).encode())
    return h.hexdigest()[:12]
