"""The accuracy guard: evaluate the source and a converted model on the same images, pairwise.

Both go through :class:`shoplens.preprocess.Preprocessor` (each with its own contract, which
differ only when the normalization was folded into the model) and the same
:func:`shoplens.metrics.evaluate` loop; the converted model runs in the SDK's
:class:`shoplens.Classifier`, exactly as on the device. The two are compared by
drift's paired accumulator (:class:`shoplens.drift.paired.PairedMetrics`), so the guard and
``shoplens drift`` measure a drop, its 95 % confidence interval, agreement and score deltas the
same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.data.datasets import Dataset
from shoplens.drift.models import to_probabilities
from shoplens.drift.paired import PairedMetrics, PairedResult
from shoplens.errors import DataError
from shoplens.metrics import EvalResult, evaluate
from shoplens.preprocess import Preprocessor

__all__ = [
    "AccuracyComparison",
    "check_classes",
    "compare",
    "evaluate_keras_model",
]


def evaluate_keras_model(
    model: Any,
    dataset: Dataset,
    contract: PreprocessContract,
    labels: Sequence[str],
    *,
    name: str = "source",
    batch_size: int = 128,
    show_progress: bool = False,
) -> EvalResult:
    """Accuracy of a Keras model (or SavedModel signature) through the SDK preprocessing."""
    check_classes(dataset, len(labels))

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model(x, training=False))

    return evaluate(
        predict, dataset, Preprocessor(contract, input_order="BGR"), model_name=name,
        label_names=tuple(labels), batch_size=batch_size, keep_scores=True, show_progress=show_progress,
    )  # fmt: skip


def check_classes(dataset: Dataset, k: int) -> None:
    """A dataset evaluated against a model must have as many classes as the model predicts."""
    if len(dataset.label_names) != k:
        raise DataError(f"{dataset.name} has {len(dataset.label_names)} classes, the model {k}")


@dataclass(frozen=True)
class AccuracyComparison:
    source: EvalResult
    converted: EvalResult
    metrics: PairedResult
    max_drop: float | None
    min_agreement: float | None = None  # top-1 agreement with the source, in %

    @property
    def agreement_pct(self) -> float:
        return 100.0 * self.metrics.agreement

    @property
    def drop(self) -> float:
        """Top-1 points, source minus converted."""
        return self.metrics.drop

    @property
    def ci95(self) -> tuple[float, float]:
        return self.metrics.drop_ci95

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[str]:
        """The limits this conversion misses, each in a few words; empty when it passes."""
        out = []
        if self.max_drop is not None and self.drop > self.max_drop:
            lo, hi = self.ci95
            out.append(f"top-1 drop {self.drop:.2f} pt (95 % CI {lo:+.2f}..{hi:+.2f}) exceeds --max-drop "
                       f"{self.max_drop:g} pt")  # fmt: skip
        if self.min_agreement is not None and self.agreement_pct < self.min_agreement:
            out.append(f"top-1 agreement {self.agreement_pct:.2f} % is below --min-agreement "
                       f"{self.min_agreement:g} %")  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.source.data,
            "n": self.source.n,
            "source_top1": round(self.source.top1, 6),
            "converted_top1": round(self.converted.top1, 6),
            "source_top5": round(self.source.top5, 6),
            "converted_top5": round(self.converted.top5, 6),
            "drop_pts": round(self.drop, 4),
            "drop_ci95_pts": [round(self.ci95[0], 4), round(self.ci95[1], 4)],
            "agreement": round(self.metrics.agreement, 6),
            "abs_score_delta_mean": round(self.metrics.abs_delta_mean, 6),
            "abs_score_delta_max": round(self.metrics.abs_delta_max, 6),
            "kl_mean": round(self.metrics.kl_mean, 6),
            "max_drop_pts": self.max_drop,
            "min_agreement_pct": self.min_agreement,
            "passed": self.passed,
        }


def compare(
    source: EvalResult, converted: EvalResult, max_drop: float | None, min_agreement: float | None = None
) -> AccuracyComparison:
    """Pair two evaluations of the same images (kept scores) through drift's accumulator."""
    if not np.array_equal(source.labels, converted.labels) or source.n == 0:
        raise DataError("the source and converted models were evaluated on different images")
    if source.scores is None or converted.scores is None:
        raise DataError("the accuracy guard needs both evaluations' scores (keep_scores=True)")
    acc = PairedMetrics(len(source.label_names))
    acc.add(to_probabilities(source.scores), to_probabilities(converted.scores), source.labels)
    return AccuracyComparison(source, converted, acc.result(), max_drop, min_agreement)
