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

A third, stronger signal needs a profile fitted to the embedding model: :class:`OpenSetProfile`, the
Mahalanobis distance of the embedding to the nearest class mean (one shared, shrunk covariance; Lee
et al. 2018), with its own calibrated ``max_distance``. ``OpenSetOptions(profile=...)`` gives it to
the Embedder (:meth:`~shoplens.Embedder.is_product` with ``embedding=``). The reference embedding
model's is ``open_set_profile.npz`` beside it (``python -m benchmarks.open_set --profile-out``);
the sample apps use a profile of that name beside the embedding model they load.

    >>> OpenSetOptions(min_score=0.4).judge(score=0.93)
    True
    >>> OpenSetOptions(min_score=0.4).judge(score=0.31)
    False
    >>> OpenSetOptions().judge(score=0.31) is None  # off: nothing is judged
    True
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.errors import DataError, UsageError

__all__ = ["PROFILE_NAME", "REFERENCE", "OpenSetOptions", "OpenSetProfile"]

PROFILE_KIND = "shoplens-open-set-profile/1"
PROFILE_NAME = "open_set_profile.npz"  # the file name the apps look for beside an embedding model


@dataclass(frozen=True, eq=False)
class OpenSetProfile:
    """The Mahalanobis distance of an embedding to the nearest class mean, and its threshold.

    Fitted on embeddings of product frames (:meth:`fit`): class means, one shared covariance shrunk
    toward its mean variance, and ``max_distance``, the distance that the calibration share of
    products exceeds, read on frames the fit did not see. Saved as a small ``.npz`` (:meth:`save`).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x = rng.normal(size=(600, 8)) + np.repeat(np.eye(8)[:3] * 4, 200, axis=0)
      >>> prof = OpenSetProfile.fit(x, np.repeat([0, 1, 2], 200))
      >>> bool(prof.distance(x[0]) <= prof.max_distance), bool(prof.distance(x[0] + 40) <= prof.max_distance)
      (True, False)
    """

    means: np.ndarray  # (K, D)
    precision: np.ndarray  # (D, D)
    max_distance: float
    frr: float = 0.02  # the share of calibration products beyond max_distance
    model_sha256: str = ""  # the embedding model it was fitted for ("": not recorded, not checked)

    def __post_init__(self) -> None:
        m, p = np.asarray(self.means, np.float64), np.asarray(self.precision, np.float64)
        if m.ndim != 2 or m.shape[0] < 1 or p.shape != (m.shape[1], m.shape[1]):
            raise DataError(f"open-set profile: means {m.shape} and precision {p.shape} do not fit together")
        if not (np.isfinite(m).all() and np.isfinite(p).all() and math.isfinite(self.max_distance)):
            raise DataError("open-set profile holds values that are not finite")
        object.__setattr__(self, "means", m)
        object.__setattr__(self, "precision", p)
        object.__setattr__(self, "max_distance", float(self.max_distance))

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @classmethod
    def fit(
        cls, vectors: np.ndarray, labels: np.ndarray, *, frr: float = 0.02, shrink: float = 0.1,
        model_sha256: str = "",
    ) -> OpenSetProfile:  # fmt: skip
        """Fit on two thirds of the (vector, label) pairs; set ``max_distance`` on the other third.

        ``model_sha256``: the embedding model's, so an Embedder of another model refuses the profile.

        A threshold read off the frames the means were fitted on turns away far more new products
        than ``frr`` (about 13 % instead of 2 % on the reference model), hence the split.
        """
        x, y = np.asarray(vectors, np.float64), np.asarray(labels)
        if x.ndim != 2 or len(x) != len(y) or len(x) < 30:
            raise DataError(f"an open-set profile needs at least 30 (D,) vectors with labels, got {x.shape}")
        if not 0.0 < frr < 0.5:
            raise UsageError(f"open-set frr must be in (0, 0.5), got {frr!r}")
        fit = np.arange(len(x)) % 3 != 0
        xf, yf = x[fit], y[fit]
        classes = np.unique(yf)
        means = np.stack([xf[yf == k].mean(0) for k in classes])
        centred = xf - means[np.searchsorted(classes, yf)]
        cov = centred.T @ centred / len(xf)
        cov += shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
        prof = cls(means, np.linalg.inv(cov), 0.0, frr)
        max_distance = float(np.quantile(prof.distance(x[~fit]), 1.0 - frr))
        return cls(means, prof.precision, max_distance, frr, model_sha256)

    def distance(self, vectors: np.ndarray) -> Any:
        """The squared Mahalanobis distance of each vector (D,) or (N, D) to its nearest class mean."""
        v = np.asarray(vectors, np.float64)
        if v.shape[-1] != self.dim:
            raise UsageError(f"open-set profile is for {self.dim}-dim embeddings, got {v.shape[-1]}")
        d = v[..., None, :] - self.means
        dist = np.einsum("...kd,de,...ke->...k", d, self.precision, d).min(-1)
        return float(dist) if np.ndim(dist) == 0 else dist

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the profile as ``.npz``, atomically."""
        from shoplens.internal.atomic import atomic_write_bytes

        buf = io.BytesIO()
        np.savez_compressed(buf, kind=np.array(PROFILE_KIND), means=self.means.astype(np.float32),
                            precision=self.precision.astype(np.float32),
                            max_distance=np.array(self.max_distance), frr=np.array(self.frr),
                            model_sha256=np.array(self.model_sha256))  # fmt: skip
        return atomic_write_bytes(path, buf.getvalue(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> OpenSetProfile:
        """Read a profile written by :meth:`save`.

        Raises:
          DataError: the file is missing, truncated, corrupt or not an open-set profile.
        """
        p = Path(path)
        if not p.is_file():
            raise DataError(f"open-set profile {p} does not exist")
        try:
            with np.load(p, allow_pickle=False) as z:
                if "kind" not in z or str(z["kind"]) != PROFILE_KIND:
                    raise DataError(f"{p} is not a ShopLens open-set profile ({PROFILE_KIND})")
                sha = str(z["model_sha256"]) if "model_sha256" in z else ""
                return cls(z["means"], z["precision"], float(z["max_distance"]), float(z["frr"]), sha)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"open-set profile {p} cannot be read: not an .npz that OpenSetProfile.save "
                            f"wrote, or truncated ({type(exc).__name__})") from None


@dataclass(frozen=True)
class OpenSetOptions:
    """When an answer is "not a product" (both thresholds off by default).

    Args:
      min_score: the lowest top-1 probability (0-1) a product gets; the Classifier sets
        ``result.is_product`` from it.
      min_similarity: the lowest cosine similarity (-1 to 1) of the nearest catalog product; the
        Embedder's :meth:`~shoplens.Embedder.is_product` judges search hits with it.
      profile: an :class:`OpenSetProfile` or its ``.npz`` path: the Embedder's
        :meth:`~shoplens.Embedder.is_product` judges the embedding by its distance to the classes.

    Raises:
      UsageError: a threshold out of its range.

    Example:
      >>> OpenSetOptions(min_score=0.38, min_similarity=0.91).enabled
      True
    """

    min_score: float | None = None
    min_similarity: float | None = None
    profile: OpenSetProfile | str | Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.profile, str | Path):
            object.__setattr__(self, "profile", OpenSetProfile.load(self.profile))
        elif self.profile is not None and not isinstance(self.profile, OpenSetProfile):
            raise UsageError(
                f"open-set profile must be an OpenSetProfile or a path, got {type(self.profile).__name__}"
            )
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
        return self.min_score is not None or self.min_similarity is not None or self.profile is not None

    def judge(
        self, *, score: float | None = None, similarity: float | None = None, embedding: Any = None
    ) -> bool | None:
        """True (a product), False (not a product) or None (no threshold applies to what is given).

        Args:
          score: the top-1 probability, if there is one.
          similarity: the nearest catalog product's cosine similarity, if a search ran.
          embedding: the frame's embedding (D,), judged by the profile if there is one.

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
        if isinstance(self.profile, OpenSetProfile) and embedding is not None:
            if self.profile.distance(embedding) > self.profile.max_distance:
                return False
            checked = True
        return True if checked else None


# Calibrated for the reference model (sample_apps/reference_model/release) by benchmarks.open_set
REFERENCE = OpenSetOptions(min_score=0.3828, min_similarity=0.9127)
