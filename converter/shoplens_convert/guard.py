"""The accuracy guard: evaluate the source and a converted model on the same images, pairwise.

Both go through :class:`shoplens.preprocess.Preprocessor` (each with its own contract, which
differ only when the normalization was folded into the model) and the same
:func:`shoplens.metrics.evaluate` loop; the converted model runs in the SDK's
:class:`shoplens.Classifier`, exactly as on the device. The top-1 drop gets a 95 % confidence
interval from the paired per-image differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shoplens.classifier import Classifier
from shoplens.contract import PreprocessContract
from shoplens.data.datasets import Dataset
from shoplens.errors import DataError
from shoplens.metrics import EvalResult, evaluate
from shoplens.options import BaseOptions, ImageClassifierOptions
from shoplens.preprocess import Preprocessor

__all__ = [
    "AccuracyComparison",
    "check_classes",
    "compare",
    "evaluate_keras_model",
    "evaluate_tflite",
    "paired_drop",
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
        label_names=tuple(labels), batch_size=batch_size, show_progress=show_progress,
    )  # fmt: skip


def check_classes(dataset: Dataset, k: int) -> None:
    """A dataset evaluated against a model must have as many classes as the model predicts."""
    if len(dataset.label_names) != k:
        raise DataError(f"{dataset.name} has {len(dataset.label_names)} classes, the model {k}")


def evaluate_tflite(
    model: bytes, dataset: Dataset, *, name: str = "converted", show_progress: bool = False
) -> EvalResult:
    """Accuracy of a .tflite (bytes) through the SDK Classifier's own preprocessing and output path."""
    opts = ImageClassifierOptions(base_options=BaseOptions(model_asset_buffer=model, num_threads=1))
    with Classifier(opts) as clf:
        return evaluate(
            clf.predict_preprocessed, dataset, clf.preprocessor, model_name=name,
            label_names=tuple(clf.labels), batch_size=128, show_progress=show_progress,
        )  # fmt: skip


def paired_drop(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray
) -> tuple[float, float, float]:
    """Top-1 drop in points (reference - candidate) with a 95 % normal CI over paired images."""
    if not len(reference) == len(candidate) == len(labels) or len(labels) == 0:
        raise DataError("paired accuracy needs the same, non-empty set of images for both models")
    d = (reference == labels).astype(np.float64) - (candidate == labels).astype(np.float64)
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
    return 100 * mean, 100 * (mean - 1.96 * se), 100 * (mean + 1.96 * se)


@dataclass
class AccuracyComparison:
    source: EvalResult
    converted: EvalResult
    drop: float  # top-1 points
    ci95: tuple[float, float]
    max_drop: float | None

    @property
    def passed(self) -> bool:
        return self.max_drop is None or self.drop <= self.max_drop

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
            "agreement": round(float(np.mean(self.source.predictions == self.converted.predictions)), 6),
            "max_drop_pts": self.max_drop,
            "passed": self.passed,
        }


def compare(source: EvalResult, converted: EvalResult, max_drop: float | None) -> AccuracyComparison:
    if not np.array_equal(source.labels, converted.labels):
        raise DataError("the source and converted models were evaluated on different images")
    drop, lo, hi = paired_drop(source.predictions, converted.predictions, source.labels)
    return AccuracyComparison(source, converted, drop, (lo, hi), max_drop)
