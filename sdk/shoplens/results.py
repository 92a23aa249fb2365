"""Results of the vision tasks: plain immutable values with ``to_dict()`` for JSON.

    >>> r = ClassificationResult((Category(3, "Dress", 0.91),), Timing(0.1, 0.3, 0.02))
    >>> r.top.label, r.rejected, round(r.timing.total_ms, 2)
    ('Dress', False, 0.42)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoplens.colour import ProductColour
from shoplens.quality import UNCHECKED, QualityVerdict

__all__ = ["Category", "ClassificationResult", "EmbeddingResult", "StreamStats", "Timing", "invalid_result"]


@dataclass(frozen=True)
class Category:
    index: int
    label: str
    score: float


@dataclass(frozen=True)
class Timing:
    preprocess_ms: float = 0.0
    invoke_ms: float = 0.0
    postprocess_ms: float = 0.0
    colour_ms: float = 0.0  # naming the product's colours (0 unless asked)

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.invoke_ms + self.postprocess_ms + self.colour_ms


@dataclass(frozen=True)
class ClassificationResult:
    """Top-k categories (empty when the quality gate rejected the frame) and how we got them."""

    categories: tuple[Category, ...]
    timing: Timing
    quality: QualityVerdict = UNCHECKED
    timestamp_ms: int | None = None
    scores: np.ndarray | None = field(default=None, repr=False, compare=False)
    colours: tuple[ProductColour, ...] = ()  # the product's named colours, dominant first (if asked)
    is_product: bool | None = None  # False: "no product recognised" (open_set); None: not judged

    @property
    def rejected(self) -> bool:
        return not self.categories and not self.quality.ok

    @property
    def top(self) -> Category | None:
        return self.categories[0] if self.categories else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp_ms": self.timestamp_ms,
            "categories": [
                {"index": c.index, "label": c.label, "score": round(c.score, 6)} for c in self.categories
            ],
            "rejected": self.rejected,
            "is_product": self.is_product,
            "quality": self.quality.to_dict(),
            "timing_ms": {
                "preprocess": round(self.timing.preprocess_ms, 4),
                "invoke": round(self.timing.invoke_ms, 4),
                "postprocess": round(self.timing.postprocess_ms, 4),
                "colour": round(self.timing.colour_ms, 4),
                "total": round(self.timing.total_ms, 4),
            },
            "colours": [c.to_dict() for c in self.colours],
        }


@dataclass
class StreamStats:
    """Every LIVE_STREAM frame is accounted for: processed, dropped (stale) or rejected."""

    submitted: int = 0
    processed: int = 0
    dropped: int = 0  # replaced by a newer frame before the worker took it
    rejected_invalid: int = 0
    rejected_quality: int = 0
    callback_errors: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


def invalid_result(ts: int) -> ClassificationResult:
    """The result a LIVE_STREAM callback receives for a frame that could not be used."""
    return ClassificationResult((), Timing(), QualityVerdict(False, ("invalid",)), ts)


@dataclass(frozen=True)
class EmbeddingResult:
    """A unit-length embedding (None when the quality gate rejected the frame)."""

    embedding: np.ndarray | None = field(repr=False)
    timing: Timing
    quality: QualityVerdict = UNCHECKED
    timestamp_ms: int | None = None
    colours: tuple[ProductColour, ...] = ()  # the product's named colours, dominant first (if asked)

    @property
    def rejected(self) -> bool:
        return self.embedding is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp_ms": self.timestamp_ms,
            "rejected": self.rejected,
            "dim": None if self.embedding is None else int(self.embedding.shape[0]),
            "quality": self.quality.to_dict(),
            "colours": [c.to_dict() for c in self.colours],
        }
