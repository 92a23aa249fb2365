"""Image embeddings for visual search: ``shoplens.Embedder``.

Same options, preprocessing path, quality gate and backends as :class:`shoplens.Classifier`, for
the ``embedding.tflite`` that ``shoplens convert --embedding`` writes (an L2-normalized (1, D)
output, ShopLens metadata with ``"output": "embedding"`` and the classifier's labels as
``categories``). Modes: IMAGE (:meth:`embed`) and VIDEO (:meth:`embed_for_video`); a kiosk's
LIVE_STREAM loop runs the classifier and embeds the frames it keeps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoplens._vision import ImageModel, dequantize
from shoplens.errors import ModelError, UsageError
from shoplens.options import ImageClassifierOptions, RunningMode, Timing
from shoplens.quality import UNCHECKED, QualityVerdict

__all__ = ["Embedder", "EmbeddingResult"]


@dataclass(frozen=True)
class EmbeddingResult:
    """A unit-length embedding (None when the quality gate rejected the frame)."""

    embedding: np.ndarray | None = field(repr=False)
    timing: Timing
    quality: QualityVerdict = UNCHECKED
    timestamp_ms: int | None = None

    @property
    def rejected(self) -> bool:
        return self.embedding is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp_ms": self.timestamp_ms,
            "rejected": self.rejected,
            "dim": None if self.embedding is None else int(self.embedding.shape[0]),
            "quality": self.quality.to_dict(),
        }


class Embedder(ImageModel):
    """Embed camera frames with an embedding ``.tflite``. Thread-safe, like the Classifier."""

    def __init__(self, options: ImageClassifierOptions) -> None:
        if isinstance(options, ImageClassifierOptions) and options.running_mode is RunningMode.LIVE_STREAM:
            raise UsageError(
                "the Embedder runs in IMAGE or VIDEO mode; embed the frames a live classifier keeps"
            )
        super().__init__(options)
        meta = self.info.shoplens_metadata or {}
        if meta.get("output") not in (None, "embedding"):
            raise ModelError(
                f"{self.model_name} is a {meta.get('output')} model, not an embedding model; "
                "make one with 'shoplens convert --embedding'"
            )
        self.dim = int(self._out_tensor.shape[1])

    def _read_labels(
        self, options: ImageClassifierOptions, meta: dict[str, Any] | None, n_outputs: int
    ) -> None:
        self.labels: tuple[str, ...] = ()  # the entries of an embedding have no names
        self.categories = tuple(str(x) for x in (meta or {}).get("labels", ()))  # the classifier's

    def __repr__(self) -> str:
        return f"Embedder(model={self.model_name!r}, dim={self.dim}, contract={self.contract.describe()!r})"

    def _output_scores(self) -> np.ndarray:
        raw = self._interp.get_tensor(self._out_index)[0]
        v = dequantize(raw, self._out_tensor).astype(np.float32)
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else v

    def embed_preprocessed(self, inputs: np.ndarray) -> np.ndarray:
        """Unit embeddings (N, D) for inputs made by :attr:`preprocessor`."""
        return self.predict_preprocessed(inputs)

    def _embed(self, frame: object, ts: int | None) -> EmbeddingResult:
        with self._lock:
            if self._closed:
                raise UsageError("this Embedder is closed")
            vec, verdict, pre_ms, inv_ms = self._scores(frame)
            t2 = time.perf_counter()
            if ts is not None:
                self._last_ts = ts
            out = None if vec is None else np.array(vec, np.float32)
            return EmbeddingResult(out, Timing(pre_ms, inv_ms, (time.perf_counter() - t2) * 1e3), verdict, ts)

    def embed(self, frame: np.ndarray) -> EmbeddingResult:
        """IMAGE mode: one frame (BGR by default)."""
        self._check_mode(RunningMode.IMAGE, "embed")
        return self._embed(frame, None)

    def embed_batch(self, frames: Sequence[np.ndarray]) -> list[EmbeddingResult]:
        self._check_mode(RunningMode.IMAGE, "embed_batch")
        return [self._embed(f, None) for f in frames]

    def embed_for_video(self, frame: np.ndarray, timestamp_ms: int) -> EmbeddingResult:
        """VIDEO mode: frames in increasing timestamp order."""
        self._check_mode(RunningMode.VIDEO, "embed_for_video")
        return self._embed(frame, self._check_ts(timestamp_ms))

    def _not_a_classifier(self, *args: Any, **kwargs: Any) -> Any:
        raise UsageError("an Embedder embeds; use embed()/embed_for_video(), or a Classifier to classify")

    classify = classify_batch = classify_for_video = classify_async = _not_a_classifier
