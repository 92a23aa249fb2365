"""The drift report: metrics, the gate, and the likely cause in words."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.drift.paired import PairedResult, bootstrap_drop_ci

if TYPE_CHECKING:
    from shoplens.data.datasets import Dataset

CAUSE_TRIGGER_AGREEMENT = 0.99  # below this, drift looks for the likely cause
CAUSE_TRIGGER_SCORE_DELTA = 0.02  # or above this mean |score delta| (int8 noise is about 0.001)
CAUSE_TRIGGER_KL = 0.02  # or above this mean KL (the int8 reference model vs its source: 0.008)


# -- the report -------------------------------------------------------------------------------
def _prf(confusion: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(confusion).astype(np.float64)
    pred = confusion.sum(axis=0).astype(np.float64)
    true = confusion.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred > 0, tp / pred, 0.0)
        recall = np.where(true > 0, tp / true, np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1}


def paired_bootstrap_ci(
    ref_ok: np.ndarray, cand_ok: np.ndarray, *, rounds: int = 4000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile CI (points) of the paired top-1 drop from per-image correctness bits."""
    d = ref_ok.astype(np.int8) - cand_ok.astype(np.int8)
    return bootstrap_drop_ci(int((d == 1).sum()), int((d == 0).sum()), int((d == -1).sum()),
                             rounds=rounds, seed=seed)  # fmt: skip


@dataclass
class Alternative:
    """A contract a buggy pipeline might use instead of the reference's, and what to call it."""

    key: str
    contract: PreprocessContract
    finding: str  # "the device probably feeds BGR"
    description: str  # "BGR input"


@dataclass
class CauseResult:
    alternative: Alternative
    agreement: float
    mean_abs_delta: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "alternative": self.alternative.key,
            "description": self.alternative.description,
            "agreement": round(self.agreement, 6),
            "mean_abs_score_delta": round(self.mean_abs_delta, 6),
        }


@dataclass
class DriftReport:
    reference: str
    candidate: str
    data: str
    labels: tuple[str, ...]
    metrics: PairedResult
    contract_differences: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    causes: list[CauseResult] = field(default_factory=list)
    cause_sample: int = 0
    cause_baseline_agreement: float = 1.0  # the reference's own contract on the cause sample
    cause_baseline_mad: float = 0.0
    per_frame: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    gate: dict[str, Any] = field(default_factory=dict)

    # -- saving ---------------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the JSON report (``to_dict``) atomically; OutputExistsError unless ``overwrite``."""
        from shoplens.internal.atomic import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n", overwrite=overwrite)

    def save_html(self, path: str | Path, *, overwrite: bool = False, dataset: Dataset | None = None) -> Path:
        """Write the self-contained HTML report atomically (:mod:`shoplens.drift.html`); with the
        ``dataset`` the report ran on, it shows the first disagreeing images as thumbnails."""
        from shoplens.drift.html import disagreeing_thumbnails, render_html
        from shoplens.internal.atomic import atomic_write_text

        d = self.to_dict()
        thumbs = disagreeing_thumbnails(dataset, d["disagreeing_ids"]) if dataset is not None else None
        return atomic_write_text(path, render_html(d, thumbs), overwrite=overwrite)

    # -- the metrics most read from outside --------------------------------------------------
    @property
    def n(self) -> int:
        return self.metrics.n

    @property
    def agreement(self) -> float:
        return self.metrics.agreement

    @property
    def kl_mean(self) -> float:
        return self.metrics.kl_mean

    @property
    def abs_delta_mean(self) -> float:
        return self.metrics.abs_delta_mean

    @property
    def drop(self) -> float:
        """Top-1 drop in points, reference minus candidate."""
        return self.metrics.drop

    def per_class(self) -> list[dict[str, Any]]:
        """Per class: accuracies, delta (points, positive = candidate worse), P/R/F1; worst first."""
        rp, cp = _prf(self.metrics.ref_confusion), _prf(self.metrics.cand_confusion)
        rows = []
        for i, name in enumerate(self.labels):
            support = int(self.metrics.ref_confusion[i].sum())
            ra = rp["recall"][i]
            ca = cp["recall"][i]
            rows.append({
                "index": i,
                "label": name,
                "support": support,
                "reference_accuracy": None if support == 0 else round(float(ra), 6),
                "candidate_accuracy": None if support == 0 else round(float(ca), 6),
                "delta_pts": 0.0 if support == 0 else round(100.0 * float(ra - ca), 4),
                "reference": {k: round(float(np.nan_to_num(v[i])), 6) for k, v in rp.items()},
                "candidate": {k: round(float(np.nan_to_num(v[i])), 6) for k, v in cp.items()},
            })  # fmt: skip
        return sorted(rows, key=lambda r: (-r["delta_pts"], r["index"]))

    @property
    def max_class_drop(self) -> tuple[float, str]:
        worst = self.per_class()[0]
        return float(worst["delta_pts"]), str(worst["label"])

    @property
    def collapsed(self) -> bool:
        """The candidate answers (nearly) the same whatever the image."""
        if self.n < 10:
            return False
        flat = self.metrics.cand_score_spread < 0.1 * max(self.metrics.ref_score_spread, 1e-9)
        one_class = self.metrics.cand_top_share >= 0.8 and self.metrics.ref_top_share < 0.5
        return flat or one_class

    @property
    def best_cause(self) -> CauseResult | None:
        """The alternative contract that reproduces the candidate, if one does convincingly."""
        if not self.causes:
            return None
        best = self.causes[0]
        base_agree = self.cause_baseline_agreement
        gap = 1.0 - base_agree
        by_agreement = best.agreement >= 0.97 and best.agreement >= base_agree + gap / 2
        base_mad = self.cause_baseline_mad
        by_scores = base_mad > 0 and best.mean_abs_delta <= 0.25 * base_mad and best.agreement >= base_agree
        if self.collapsed:
            # a wrong range can also make the reference near-constant; only a match of the scores
            # themselves (not just of the argmax) then tells a preprocessing bug from a broken model
            return best if by_scores else None
        return best if (by_agreement or by_scores) else None

    def likely_cause(self) -> str:
        best = self.best_cause
        if best is not None:
            return (
                f"the candidate matches the reference with {best.alternative.description} "
                f"(agreement {100 * best.agreement:.1f} %, mean |score delta| {best.mean_abs_delta:.4f}): "
                f"{best.alternative.finding}"
            )
        if self.collapsed:
            m = self.metrics
            name = self.labels[m.cand_top_class]
            return (
                f"the candidate collapsed to a near-constant output (it predicts {name!r} for "
                f"{100 * m.cand_top_share:.1f} % of images; its score spread is "
                f"{100 * m.cand_score_spread / max(m.ref_score_spread, 1e-9):.1f} % of the reference's): "
                "quantization broke the model; check the calibration images and that they went through "
                "the model's preprocessing"
            )
        if self.contract_differences:
            diffs = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in self.contract_differences.items())
            return f"the two models declare different preprocessing contracts ({diffs})"
        if self.causes:
            c = self.causes[0]
            return (
                "no common preprocessing mistake reproduces the candidate (closest: "
                f"{c.alternative.description}, agreement {100 * c.agreement:.1f} %); the difference is "
                "probably numeric: quantization error, or a different runtime or op implementation"
            )
        if (
            self.agreement >= CAUSE_TRIGGER_AGREEMENT
            and self.abs_delta_mean <= CAUSE_TRIGGER_SCORE_DELTA
            and self.kl_mean <= CAUSE_TRIGGER_KL
        ):
            return "none needed: the candidate agrees with the reference"
        return "not analysed"

    def check_gate(
        self,
        *,
        max_drop: float | None = None,
        min_agreement: float | None = None,
        max_class_drop: float | None = None,
        score_tolerance: float | None = None,
        allow_collapse: bool = False,
    ) -> list[str]:
        """The failed limits, each saying by how much; empty when the gate passes."""
        failures = []
        if max_drop is not None and self.drop > max_drop:
            failures.append(
                f"top-1 drop {self.drop:.2f} pts > --max-drop {max_drop:g} (by {self.drop - max_drop:.2f}; "
                f"95 % CI {self.metrics.drop_ci95[0]:.2f}..{self.metrics.drop_ci95[1]:.2f})"
            )
        if min_agreement is not None and 100 * self.agreement < min_agreement:
            failures.append(
                f"agreement {100 * self.agreement:.2f} % < --min-agreement {min_agreement:g} % "
                f"(by {min_agreement - 100 * self.agreement:.2f})"
            )
        if max_class_drop is not None:
            d, name = self.max_class_drop
            if d > max_class_drop:
                failures.append(
                    f"class {name!r} drops {d:.2f} pts > --max-class-drop {max_class_drop:g} "
                    f"(by {d - max_class_drop:.2f})"
                )
        if score_tolerance is not None:
            bad = [f for f in self.per_frame if not f["ok"]]
            if bad:
                failures.append(
                    f"{len(bad)} of {len(self.per_frame)} frames differ (top-1 changed or a score off "
                    "by more "
                    f"than {score_tolerance:g}; worst {max(f['max_abs_delta'] for f in bad):.4f} "
                    f"on {max(bad, key=lambda f: f['max_abs_delta'])['id']})"
                )
        if self.collapsed and not allow_collapse:
            m = self.metrics
            failures.append(
                f"the candidate collapsed to a near-constant output ({100 * m.cand_top_share:.1f} % "
                f"{self.labels[m.cand_top_class]!r}); pass --allow-collapse only if that is expected"
            )
        self.gate = {
            "max_drop_pts": max_drop,
            "min_agreement_pct": min_agreement,
            "max_class_drop_pts": max_class_drop,
            "score_tolerance": score_tolerance,
            "collapse_allowed": allow_collapse,
            "passed": not failures,
            "failures": failures,
        }
        return failures

    def to_dict(self) -> dict[str, Any]:
        best = self.best_cause
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "data": self.data,
            "n": self.n,
            "labels": list(self.labels),
            "reference_top1": round(self.metrics.ref_top1, 6),
            "candidate_top1": round(self.metrics.cand_top1, 6),
            "reference_top5": round(self.metrics.ref_top5, 6),
            "candidate_top5": round(self.metrics.cand_top5, 6),
            "drop_pts": round(self.drop, 4),
            "drop_ci95_pts": [round(self.metrics.drop_ci95[0], 4), round(self.metrics.drop_ci95[1], 4)],
            "agreement": round(self.agreement, 6),
            "kl_mean": round(self.kl_mean, 6),
            "abs_score_delta_mean": round(self.abs_delta_mean, 6),
            "abs_score_delta_max": round(self.metrics.abs_delta_max, 6),
            "per_class": self.per_class(),
            "reference_confusion": self.metrics.ref_confusion.tolist(),
            "candidate_confusion": self.metrics.cand_confusion.tolist(),
            "disagreeing_ids": self.metrics.disagreeing_ids,
            "disagreeing_total": self.metrics.disagreeing_total,
            "collapsed": self.collapsed,
            "candidate_top_class_share": round(self.metrics.cand_top_share, 6),
            "contract_differences": {k: [str(a), str(b)] for k, (a, b) in self.contract_differences.items()},
            "cause_analysis": {
                "sample": self.cause_sample,
                "baseline_agreement": round(self.cause_baseline_agreement, 6),
                "baseline_mean_abs_score_delta": round(self.cause_baseline_mad, 6),
                "alternatives": [c.to_dict() for c in self.causes],
                "best": best.alternative.key if best else None,
            },
            "likely_cause": self.likely_cause(),
            "per_frame": self.per_frame,
            "gate": self.gate,
            "seconds": round(self.seconds, 2),
        }


def gate_limits(gate: dict[str, Any]) -> str:
    """The limits a gate applied, in words: "limits: top-1 drop <= 1 pts, ...; a collapse fails"."""
    parts = []
    if gate.get("max_drop_pts") is not None:
        parts.append(f"top-1 drop <= {gate['max_drop_pts']:g} pts")
    if gate.get("min_agreement_pct") is not None:
        parts.append(f"agreement >= {gate['min_agreement_pct']:g} %")
    if gate.get("max_class_drop_pts") is not None:
        parts.append(f"any class's drop <= {gate['max_class_drop_pts']:g} pts")
    if gate.get("score_tolerance") is not None:
        parts.append(f"every frame's scores within {gate['score_tolerance']:g}")
    collapse = "a collapsed candidate is allowed" if gate.get("collapse_allowed") else "a collapse fails"
    return f"limits: {', '.join(parts) if parts else 'none given'}; {collapse}"


def label_name(labels: list[str] | tuple[str, ...], index: Any) -> str:
    """A class index as its label (kept as given when it is not an index into ``labels``)."""
    return labels[index] if isinstance(index, int) and 0 <= index < len(labels) else str(index)
