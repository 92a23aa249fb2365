"""Data specs to model-ready arrays, through the SDK's one preprocessing implementation.

Calibration, fine-tuning (pruning, QAT) and the accuracy guard all read images here, so every
image the converter shows a model went through :class:`shoplens.preprocess.Preprocessor`, the
code the device runs.
"""

from __future__ import annotations

import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.data.datasets import Dataset
from shoplens.errors import DataError, UsageError
from shoplens.internal.progress import progress
from shoplens.preprocess import Preprocessor

__all__ = ["MAX_ARRAY_BYTES", "preprocessed_arrays"]

MAX_ARRAY_BYTES = 8 << 30  # fine-tuning sets live in memory; refuse more than this


def preprocessed_arrays(
    dataset: Dataset,
    contract: PreprocessContract,
    limit: int | None = None,
    *,
    what: str = "data",
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 NHWC, y int64) for the first ``limit`` readable images of ``dataset``."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if limit is not None and limit < 1:
        raise UsageError(f"{what} needs at least 1 image, got {limit}")
    if n == 0:
        raise DataError(f"{what} {dataset.name} holds no images")
    pre = Preprocessor(contract, input_order="BGR")
    nbytes = n * int(np.prod(pre.out_shape)) * 4
    if nbytes > MAX_ARRAY_BYTES:
        raise UsageError(
            f"{what} {dataset.name}: {n} images need {nbytes / 2**30:.1f} GiB as model input; "
            f"limit it with ':N' in the data spec (at most {MAX_ARRAY_BYTES * n // nbytes})"
        )
    x = np.empty((n, *pre.out_shape), np.float32)
    y = np.empty((n,), np.int64)
    k = 0
    bar = progress(show_progress, f"preprocessing {what}", n)
    try:
        for batch in dataset.batches(min(n, 256)):
            for img, label in zip(batch.images, batch.labels, strict=True):
                if k == n:
                    break
                pre(img, x[k])
                y[k] = label
                k += 1
            bar.advance(len(batch))
            if k == n:
                break
    finally:
        bar.close()
    if k == 0:
        raise DataError(f"{what} {dataset.name} yielded no readable images")
    return x[:k], y[:k]
