"""The metrics of a paired comparison as one accumulator: ``add`` batches, ``merge``, ``result``.

A drift run, the converter's accuracy guard and the catalog-scale Beam pipeline all compare a
reference and a candidate on the same images. They share this one accumulator: in one process it
is folded over batches; on Beam it is the state of a ``CombineFn`` (``merge`` combines the
workers' partial results). Everything in it is a count or a sum, so merging is exact for every
count (top-1, top-5, confusion, agreement) and associative for the float sums.

    >>> acc = PairedMetrics(3)
    >>> ref = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1]])
    >>> cand = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])
    >>> acc.add(ref, cand, np.array([0, 1]), ["a", "b"])
    >>> r = acc.result()
    >>> r.agreement, r.disagreeing_ids, round(r.drop, 1)
    (0.5, ['b'], 50.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoplens.errors import DataError
from shoplens.metrics import topk_hits

__all__ = ["MAX_LISTED_IDS", "PairedMetrics", "PairedResult", "bootstrap_drop_ci", "kl_rows"]

MAX_LISTED_IDS = 1000


def kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) per row, with both clipped away from 0."""
    eps = 1e-7
    p = np.clip(p, eps, 1.0)
    q = np.clip(q, eps, 1.0)
    kl: np.ndarray = np.sum(p * (np.log(p) - np.log(q)), axis=1)
    return kl


def bootstrap_drop_ci(
    worse: int, same: int, better: int, *, rounds: int = 4000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile CI (points) of the paired top-1 drop, resampling images with replacement.

    The paired difference per image (reference right - candidate right) takes only the values
    -1 (``better``), 0 (``same``) and +1 (``worse``), so resampling N images is a multinomial
    draw over those three counts: exact, and O(rounds) rather than O(rounds * N).
    """
    n = worse + same + better
    if n == 0:
        return (math.nan, math.nan)
    counts = np.array([better, same, worse], np.float64)
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=rounds)
    drops = 100.0 * (draws[:, 2] - draws[:, 0]) / n
    lo, hi = np.percentile(drops, [2.5, 97.5])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedResult:
    """What :meth:`PairedMetrics.result` extracts (the metric part of a drift report)."""

    n: int
    ref_confusion: np.ndarray
    cand_confusion: np.ndarray
    ref_top5: float
    cand_top5: float
    agreement: float
    kl_mean: float
    abs_delta_mean: float
    abs_delta_max: float
    drop_ci95: tuple[float, float]
    disagreeing_ids: list[str]
    disagreeing_total: int
    ref_top_share: float
    cand_top_share: float
    cand_top_class: int
    ref_score_spread: float
    cand_score_spread: float

    @property
    def ref_top1(self) -> float:
        return float(np.trace(self.ref_confusion) / max(self.n, 1))

    @property
    def cand_top1(self) -> float:
        return float(np.trace(self.cand_confusion) / max(self.n, 1))

    @property
    def drop(self) -> float:
        """Top-1 drop in points, reference minus candidate."""
        return 100.0 * (self.ref_top1 - self.cand_top1)


@dataclass
class PairedMetrics:
    """Counts and sums of a paired comparison over ``k`` classes; see the module docstring."""

    k: int
    n: int = 0
    ref_confusion: np.ndarray = field(init=False, repr=False)
    cand_confusion: np.ndarray = field(init=False, repr=False)
    ref_pred_counts: np.ndarray = field(init=False, repr=False)
    cand_pred_counts: np.ndarray = field(init=False, repr=False)
    score_sums: np.ndarray = field(init=False, repr=False)  # (4, k): r, r^2, c, c^2
    top5: np.ndarray = field(init=False, repr=False)  # (2,) hits of ref, cand
    paired: np.ndarray = field(init=False, repr=False)  # (3,) worse, same, better
    agree: int = 0
    kl_sum: float = 0.0
    abs_delta_sum: float = 0.0
    abs_delta_max: float = 0.0
    disagreeing_ids: list[str] = field(default_factory=list)
    disagreeing_total: int = 0
    max_ids: int = MAX_LISTED_IDS

    def __post_init__(self) -> None:
        k = self.k
        if not isinstance(k, int) or k < 1:
            raise DataError(f"a paired comparison needs at least one class, got {k!r}")
        zeros = {
            "ref_confusion": (k, k), "cand_confusion": (k, k), "ref_pred_counts": (k,),
            "cand_pred_counts": (k,), "top5": (2,), "paired": (3,),
        }  # fmt: skip
        for name, shape in zeros.items():
            setattr(self, name, np.zeros(shape, np.int64))
        self.score_sums = np.zeros((4, k), np.float64)

    def add(
        self,
        ref_scores: np.ndarray,
        cand_scores: np.ndarray,
        labels: np.ndarray,
        ids: Sequence[str] | None = None,
    ) -> None:
        """Fold one batch in: probabilities (N, k) of both models, true labels, image ids."""
        rs = np.asarray(ref_scores, np.float64)
        cs = np.asarray(cand_scores, np.float64)
        y = np.asarray(labels, np.int64)
        m = len(y)
        if rs.shape != (m, self.k) or cs.shape != (m, self.k):
            raise DataError(f"paired scores are {rs.shape} and {cs.shape}; expected ({m}, {self.k}) each")
        if m and (int(y.max()) >= self.k or int(y.min()) < 0):
            raise DataError(f"dataset label {int(y.max())} is outside the model's {self.k} classes")
        rp, cp = rs.argmax(1), cs.argmax(1)
        np.add.at(self.ref_confusion, (y, rp), 1)
        np.add.at(self.cand_confusion, (y, cp), 1)
        self.ref_pred_counts += np.bincount(rp, minlength=self.k)
        self.cand_pred_counts += np.bincount(cp, minlength=self.k)
        self.score_sums += np.stack([rs.sum(0), (rs * rs).sum(0), cs.sum(0), (cs * cs).sum(0)])
        self.top5 += np.array([topk_hits(rs, y, 5), topk_hits(cs, y, 5)], np.int64)
        d = (rp == y).astype(np.int64) - (cp == y).astype(np.int64)
        self.paired += np.array([(d == 1).sum(), (d == 0).sum(), (d == -1).sum()], np.int64)
        same = rp == cp
        self.agree += int(same.sum())
        self.kl_sum += float(kl_rows(rs, cs).sum())
        ad = np.abs(rs - cs)
        self.abs_delta_sum += float(ad.mean(axis=1).sum())
        if m:
            self.abs_delta_max = max(self.abs_delta_max, float(ad.max()))
        off = np.flatnonzero(~same)
        self.disagreeing_total += len(off)
        room = self.max_ids - len(self.disagreeing_ids)
        if room > 0 and len(off):
            names = ids if ids is not None else [str(self.n + j) for j in range(m)]
            self.disagreeing_ids.extend(str(names[j]) for j in off[:room].tolist())
        self.n += m

    def merge(self, other: PairedMetrics) -> PairedMetrics:
        """Add ``other``'s counts into this accumulator (in place) and return it."""
        if other.k != self.k:
            raise DataError(f"cannot merge paired metrics of {other.k} classes into {self.k}")
        for name in ("ref_confusion", "cand_confusion", "ref_pred_counts", "cand_pred_counts", "score_sums",
                     "top5", "paired"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.n += other.n
        self.agree += other.agree
        self.kl_sum += other.kl_sum
        self.abs_delta_sum += other.abs_delta_sum
        self.abs_delta_max = max(self.abs_delta_max, other.abs_delta_max)
        self.disagreeing_total += other.disagreeing_total
        room = self.max_ids - len(self.disagreeing_ids)
        self.disagreeing_ids.extend(other.disagreeing_ids[: max(room, 0)])
        return self

    def to_state(self) -> dict[str, Any]:
        """A JSON-safe copy of the accumulator (a pipeline hands it back to the driver as text)."""
        arrays = ("ref_confusion", "cand_confusion", "ref_pred_counts", "cand_pred_counts", "score_sums",
                  "top5", "paired")  # fmt: skip
        state: dict[str, Any] = {name: getattr(self, name).tolist() for name in arrays}
        state.update(
            k=self.k, n=self.n, agree=self.agree, kl_sum=self.kl_sum, abs_delta_sum=self.abs_delta_sum,
            abs_delta_max=self.abs_delta_max, disagreeing_ids=list(self.disagreeing_ids),
            disagreeing_total=self.disagreeing_total, max_ids=self.max_ids,
        )  # fmt: skip
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PairedMetrics:
        """The accumulator :meth:`to_state` wrote."""
        try:
            acc = cls(int(state["k"]), max_ids=int(state.get("max_ids", MAX_LISTED_IDS)))
            for name in ("ref_confusion", "cand_confusion", "ref_pred_counts", "cand_pred_counts", "top5",
                         "paired"):  # fmt: skip
                setattr(acc, name, np.asarray(state[name], np.int64).reshape(getattr(acc, name).shape))
            acc.score_sums = np.asarray(state["score_sums"], np.float64).reshape(acc.score_sums.shape)
            acc.n, acc.agree = int(state["n"]), int(state["agree"])
            acc.kl_sum, acc.abs_delta_sum = float(state["kl_sum"]), float(state["abs_delta_sum"])
            acc.abs_delta_max = float(state["abs_delta_max"])
            acc.disagreeing_ids = [str(i) for i in state["disagreeing_ids"]]
            acc.disagreeing_total = int(state["disagreeing_total"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"paired metrics state is malformed: {exc}") from None
        return acc

    @classmethod
    def merged(cls, parts: Iterable[PairedMetrics], k: int) -> PairedMetrics:
        out = cls(k)
        for p in parts:
            out.merge(p)
        return out

    def result(self) -> PairedResult:
        """The metrics; DataError when nothing was added."""
        n = self.n
        if n == 0:
            raise DataError("no images were compared")

        def spread(s1: np.ndarray, s2: np.ndarray) -> float:
            var = np.maximum(s2 / n - (s1 / n) ** 2, 0.0)
            return float(np.sqrt(var).mean())

        worse, same, better = (int(v) for v in self.paired)
        return PairedResult(
            n=n,
            ref_confusion=self.ref_confusion.copy(),
            cand_confusion=self.cand_confusion.copy(),
            ref_top5=int(self.top5[0]) / n,
            cand_top5=int(self.top5[1]) / n,
            agreement=self.agree / n,
            kl_mean=max(0.0, self.kl_sum / n),
            abs_delta_mean=self.abs_delta_sum / n,
            abs_delta_max=self.abs_delta_max,
            drop_ci95=bootstrap_drop_ci(worse, same, better),
            disagreeing_ids=list(self.disagreeing_ids),
            disagreeing_total=self.disagreeing_total,
            ref_top_share=float(self.ref_pred_counts.max() / n),
            cand_top_share=float(self.cand_pred_counts.max() / n),
            cand_top_class=int(self.cand_pred_counts.argmax()),
            ref_score_spread=spread(self.score_sums[0], self.score_sums[1]),
            cand_score_spread=spread(self.score_sums[2], self.score_sums[3]),
        )
