"""Open-set answers: "no product recognised" for a photo of a shelf label, a wall or anything else.

A classifier always names one of its classes. The open-set decision turns its answer into "not a
product" when the evidence is weak: the top-1 probability is under ``min_score`` (the Classifier)
or, where a catalog index is searched, the nearest product's cosine similarity is under
``min_similarity`` (the Embedder with :meth:`~shoplens.Embedder.is_product`). Both are off unless
set, and both are calibrated per model on real product frames: each threshold is the 1 % quantile
of its signal on kiosk frames of products the model was not tested on, so together they turn away
at most 2 % of products (``python -m benchmarks.open_set``).

:data:`REFERENCE` holds the thresholds calibrated for the reference model
(``benchmarks/results/open-set-2026-12-02.json``). Measured there on generated non-products in
kiosk scenes, they reject 28 % of text cards, 84 % of noise, 37 % of gradients, 40 % of filled
shapes and every empty scene, at 1.7 % of products turned away: far from the 90 % the decision is
meant to reach. A model fine-tuned with outlier exposure does much better on the same rule
(``benchmarks.outlier_exposure``; docs/sdk.md).

    >>> OpenSetOptions(min_score=0.4).judge(score=0.93)
    True
    >>> OpenSetOptions(min_score=0.4).judge(score=0.31)
    False
    >>> OpenSetOptions().judge(score=0.31) is None  # off: nothing is judged
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shoplens.errors import UsageError

__all__ = ["REFERENCE", "OpenSetOptions"]


@dataclass(frozen=True)
class OpenSetOptions:
    """When an answer is "not a product" (both thresholds off by default).

    Args:
      min_score: the lowest top-1 probability (0-1) a product gets; the Classifier sets
        ``result.is_product`` from it.
      min_similarity: the lowest cosine similarity (-1 to 1) of the nearest catalog product; the
        Embedder's :meth:`~shoplens.Embedder.is_product` judges search hits with it.

    Raises:
      UsageError: a threshold out of its range.

    Example:
      >>> OpenSetOptions(min_score=0.38, min_similarity=0.91).enabled
      True
    """

    min_score: float | None = None
    min_similarity: float | None = None

    def __post_init__(self) -> None:
        for name, lo, hi in (("min_score", 0.0, 1.0), ("min_similarity", -1.0, 1.0)):
            v = getattr(self, name)
            if v is None:
                continue
            number = isinstance(v, int | float) and not isinstance(v, bool)
            if not number or not math.isfinite(v) or not lo <= v <= hi:
                raise UsageError(f"open-set {name} must be a number in [{lo:g}, {hi:g}], got {v!r}")
            object.__setattr__(self, name, float(v))

    @property
    def enabled(self) -> bool:
        return self.min_score is not None or self.min_similarity is not None

    def judge(self, *, score: float | None = None, similarity: float | None = None) -> bool | None:
        """True (a product), False (not a product) or None (no threshold applies to what is given).

        Args:
          score: the top-1 probability, if there is one.
          similarity: the nearest catalog product's cosine similarity, if a search ran.

        Returns:
          False when any given signal is under its threshold, True when at least one threshold was
          checked and passed, None when none applied.
        """
        checked = False
        if self.min_score is not None and score is not None:
            if score < self.min_score:
                return False
            checked = True
        if self.min_similarity is not None and similarity is not None:
            if similarity < self.min_similarity:
                return False
            checked = True
        return True if checked else None


# Calibrated for the reference model (sample_apps/reference_model/release) by benchmarks.open_set
REFERENCE = OpenSetOptions(min_score=0.3828, min_similarity=0.9127)
