"""Model outputs to answers: pure functions shared by the Classifier, the Embedder and drift.

There is one rule for each step, so a score means the same thing on the device, in a drift report
and in the converter's accuracy guard:

* :func:`dequantize` goes through int64, so ``q - zero_point`` cannot overflow (uint8 0 - 128);
* :func:`is_probabilities` decides whether rows already are probabilities, and
  :func:`to_probabilities` softmaxes them when they are logits;
* :func:`top_k` picks the best allowed categories above a threshold;
* :func:`l2_normalize` makes embeddings unit length.

    >>> to_probabilities(np.array([[2.0, 0.0]])).round(3)
    array([[0.881, 0.119]])
    >>> top_k(np.array([0.1, 0.7, 0.2]), 2)
    [(1, 0.7), (2, 0.2)]
"""

from __future__ import annotations

import numpy as np

__all__ = ["dequantize", "is_probabilities", "l2_normalize", "softmax", "to_probabilities", "top_k"]

_RANGE_SLACK = 1e-3  # quantized probabilities can overshoot [0, 1] by a rounding step
_SUM_SLACK = 0.05  # uint8 probabilities sum to 1 within a few steps of 1/256


def dequantize(q: np.ndarray, scale: float | None, zero_point: int = 0) -> np.ndarray:
    """``scale * (q - zero_point)`` as float64, through int64; ``scale=None``: float as it is.

    Args:
      q: the raw output tensor (any integer or float dtype).
      scale, zero_point: the tensor's quantization parameters (``None`` for a float tensor).

    Returns:
      A float64 array of the same shape.
    """
    if not scale:
        return np.asarray(q, np.float64)
    return (np.asarray(q).astype(np.int64) - int(zero_point)) * float(scale)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (a vector or rows), shifted by the maximum for stability."""
    z = np.asarray(x, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def is_probabilities(scores: np.ndarray) -> bool:
    """True when every row lies in [0, 1] and sums to 1 (within quantization slack)."""
    s = np.asarray(scores, np.float64)
    if s.size == 0:
        return True
    if s.min() < -_RANGE_SLACK or s.max() > 1 + _RANGE_SLACK:
        return False
    return bool(np.allclose(s.sum(axis=-1), 1.0, atol=_SUM_SLACK))


def to_probabilities(scores: np.ndarray, *, logits: bool | None = None) -> np.ndarray:
    """Scores as probabilities: kept (clipped to [0, 1]) when they are, softmaxed when logits.

    Args:
      scores: a vector or rows of scores.
      logits: what the model's metadata says its output is; ``None`` decides from the values
        with :func:`is_probabilities`.
    """
    s = np.asarray(scores, np.float64)
    if logits is None:
        logits = not is_probabilities(s)
    if logits:
        return softmax(s)
    clipped: np.ndarray = np.clip(s, 0.0, 1.0)
    return clipped


def top_k(
    scores: np.ndarray,
    k: int,
    *,
    allowed: np.ndarray | None = None,
    threshold: float = 0.0,
    first: int | None = None,
) -> list[tuple[int, float]]:
    """The ``k`` best (index, score) pairs among ``allowed`` classes with score >= ``threshold``.

    ``first`` is put first when allowed (a smoothed label that hysteresis keeps on top); ties keep
    the lower index first. Scores are what the answer shows, so they are not renormalized.
    """
    s = np.asarray(scores, np.float64)
    masked = s if allowed is None else np.where(allowed, s, -np.inf)
    order = np.argsort(-masked, kind="stable")
    if first is not None and (allowed is None or allowed[first]):
        order = np.concatenate([[first], order[order != first]])
    out = []
    for i in order[:k]:
        if masked[i] == -np.inf or s[i] < threshold:
            continue
        out.append((int(i), float(s[i])))
    return out


def l2_normalize(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to unit length along the last axis (a zero vector stays zero)."""
    x = np.asarray(v, np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    out: np.ndarray = x / np.where(n > 0, n, 1.0)
    return out
