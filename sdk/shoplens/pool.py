"""``ClassifierPool``: several independent classifiers for multi-camera kiosks."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from shoplens.classifier import Classifier
from shoplens.errors import UsageError
from shoplens.options import ImageClassifierOptions, RunningMode
from shoplens.results import ClassificationResult

__all__ = ["ClassifierPool"]


class ClassifierPool:
    """``n`` independent Classifiers (one interpreter each) for multi-camera kiosks.

    Args:
      options: IMAGE-mode :class:`~shoplens.options.ImageClassifierOptions` shared by every member.
      n: how many classifiers (frames from ``n`` threads run in parallel).

    Raises:
      UsageError: ``n`` < 1, or a mode other than IMAGE (use one LIVE_STREAM Classifier per camera).

    Example:
      >>> with ClassifierPool(ImageClassifierOptions(BaseOptions(model_asset_path="m.tflite")), 2) as pool:
      ...     result = pool.classify(frame)                                   # doctest: +SKIP
    """

    def __init__(self, options: ImageClassifierOptions, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise UsageError(f"pool size must be an int >= 1, got {n!r}")
        if options.running_mode is not RunningMode.IMAGE:
            raise UsageError("ClassifierPool serves IMAGE mode; use one LIVE_STREAM Classifier per camera")
        self._members = [Classifier(replace(options)) for _ in range(n)]
        self._free = list(self._members)
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._members)

    @contextlib.contextmanager
    def acquire(self, timeout: float | None = None) -> Iterator[Classifier]:
        """A free member for a ``with`` block; TimeoutError when none frees up within ``timeout`` s."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._free), timeout=timeout):
                raise TimeoutError("no classifier became free in time")
            c = self._free.pop()
        try:
            yield c
        finally:
            with self._cond:
                self._free.append(c)
                self._cond.notify()

    def classify(self, frame: np.ndarray) -> ClassificationResult:
        """Classify on the first free member (blocks until one is free)."""
        with self.acquire() as c:
            return c.classify(frame)

    def close(self) -> None:
        for c in self._members:
            c.close()

    def __enter__(self) -> ClassifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
