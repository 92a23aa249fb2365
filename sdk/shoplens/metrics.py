"""Classification metrics and the evaluation loop shared by every model kind.

The loop takes a ``predict`` callable (a Keras model on the converter side, a TFLite
interpreter in the SDK) and always feeds it through :class:`shoplens.preprocess.Preprocessor`,
so a Keras source and its converted model see identical input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.data.datasets import Dataset
from shoplens.errors import DataError
from shoplens.internal.atomic import atomic_write_text
from shoplens.internal.progress import progress
from shoplens.preprocess import Preprocessor

__all__ = ["EvalResult", "evaluate", "evaluate_tflite", "topk_accuracy", "topk_hits"]


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows have their label among their k highest scores."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return int(np.any(top == labels[:, None], axis=1).sum())


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    if len(labels) == 0:
        return float("nan")
    return topk_hits(scores, labels, k) / len(labels)


@dataclass
class EvalResult:
    """Accuracy of one model on one dataset. Save it explicitly with :meth:`save`."""

    model: str
    data: str
    label_names: tuple[str, ...]
    n: int
    top1: float
    top5: float
    confusion: np.ndarray
    seconds: float
    skipped: int = 0
    predictions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64), repr=False)
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64), repr=False)
    scores: np.ndarray | None = field(default=None, repr=False)  # (n, k), when kept

    @property
    def per_class_accuracy(self) -> dict[str, float]:
        totals = self.confusion.sum(axis=1)
        return {
            name: float(self.confusion[i, i] / totals[i]) if totals[i] else float("nan")
            for i, name in enumerate(self.label_names)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "n": self.n,
            "skipped": self.skipped,
            "top1": round(self.top1, 6),
            "top5": round(self.top5, 6),
            # a class the data holds no images of has no accuracy: null, never NaN (invalid JSON)
            "per_class_top1": {
                k: None if np.isnan(v) else round(v, 6) for k, v in self.per_class_accuracy.items()
            },
            "confusion": self.confusion.tolist(),
            "labels": list(self.label_names),
            "seconds": round(self.seconds, 2),
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n", overwrite=overwrite)


def evaluate(
    predict: Callable[[np.ndarray], np.ndarray],
    dataset: Dataset,
    preprocessor: Preprocessor,
    *,
    model_name: str = "model",
    label_names: tuple[str, ...] | None = None,
    batch_size: int = 128,
    keep_scores: bool = False,
    show_progress: bool = False,
) -> EvalResult:
    """Run ``predict`` over the dataset in batches (memory bounded) and score top-1/top-5.

    ``keep_scores`` keeps every image's scores (n x k floats; the accuracy guard pairs them).
    """
    names = tuple(label_names or dataset.label_names)
    k = len(names)
    confusion = np.zeros((k, k), np.int64)
    preds: list[np.ndarray] = []
    labels_all: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    top5_hits = 0
    buf = np.empty((batch_size, *preprocessor.out_shape), preprocessor.out_dtype)
    t0 = time.perf_counter()
    n = 0
    with progress(show_progress, f"evaluating {model_name}", len(dataset)) as bar:
        for batch in dataset.batches(batch_size):
            m = len(batch)
            for i, img in enumerate(batch.images):
                preprocessor(img, buf[i])
            scores = np.asarray(predict(buf[:m]))
            if scores.ndim != 2 or scores.shape[0] != m:
                raise DataError(f"model returned scores of shape {scores.shape} for a batch of {m}")
            if scores.shape[1] != k:
                raise DataError(
                    f"model predicts {scores.shape[1]} classes but the labels list {k}; "
                    "check that the labels file belongs to this model"
                )
            if batch.labels.size and int(batch.labels.max()) >= k:
                raise DataError(f"dataset label {int(batch.labels.max())} is outside the model's {k} classes")
            p = np.argmax(scores, axis=1)
            np.add.at(confusion, (batch.labels, p), 1)
            top5_hits += topk_hits(scores, batch.labels, 5)
            preds.append(p)
            labels_all.append(batch.labels)
            if keep_scores:
                kept.append(scores.astype(np.float32))
            n += m
            bar.advance(m)
    if n == 0:
        raise DataError(f"dataset {dataset.name} yielded no images")
    y = np.concatenate(labels_all)
    yhat = np.concatenate(preds)
    return EvalResult(
        model=model_name,
        data=dataset.name,
        label_names=names,
        n=n,
        top1=float(np.mean(y == yhat)),
        top5=top5_hits / n,
        confusion=confusion,
        seconds=time.perf_counter() - t0,
        skipped=dataset.skipped,
        predictions=yhat,
        labels=y,
        scores=np.concatenate(kept) if keep_scores else None,
    )


def evaluate_tflite(
    model: bytes | str | Path,
    dataset: Dataset | str,
    *,
    name: str | None = None,
    batch_size: int = 128,
    show_progress: bool = False,
) -> EvalResult:
    """Accuracy of a ``.tflite`` (a path or its bytes) through the SDK Classifier's own
    preprocessing and output path, exactly as on the device (1 thread). ``dataset`` may be a data
    spec, opened with the model's labels (an image folder maps by name).

    Raises:
      ModelError: the model cannot be loaded.
      DataError: the dataset is empty, or its classes are not the model's.
    """
    from shoplens.classifier import Classifier
    from shoplens.options import BaseOptions, ImageClassifierOptions

    if isinstance(model, (bytes, bytearray)):
        base = BaseOptions(model_asset_buffer=bytes(model), num_threads=1)
        label = name or "converted"
    else:
        base = BaseOptions(model_asset_path=Path(model), num_threads=1)
        label = name or Path(model).name
    with Classifier(ImageClassifierOptions(base)) as clf:
        if isinstance(dataset, str):
            from shoplens.data.spec import open_dataset

            dataset = open_dataset(dataset, labels=clf.labels)
        if len(dataset.label_names) != len(clf.labels):
            raise DataError(
                f"{dataset.name} has {len(dataset.label_names)} classes, the model {len(clf.labels)}"
            )
        return evaluate(
            clf.predict_preprocessed, dataset, clf.preprocessor, model_name=label,
            label_names=tuple(clf.labels), batch_size=batch_size, keep_scores=True,
            show_progress=show_progress,
        )  # fmt: skip
