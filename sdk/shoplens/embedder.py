"""Image embeddings for visual search: ``shoplens.Embedder``.

The same preprocessing path, quality gate and back ends as :class:`shoplens.Classifier`, for the
``embedding.tflite`` that ``shoplens convert --embedding`` writes (a (1, D) output, ShopLens
metadata with ``"output": "embedding"`` and the classifier's labels as ``categories``). Modes:
IMAGE (:meth:`Embedder.embed`) and VIDEO (:meth:`Embedder.embed_for_video`); a kiosk's
LIVE_STREAM loop runs the classifier and embeds the frames it keeps.

    >>> from shoplens import Embedder
    >>> with Embedder.create_from_model_path("embedding.tflite") as emb:   # doctest: +SKIP
    ...     vec = emb.embed(frame_bgr).embedding                          # unit length, (D,)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from shoplens._base_vision_task import BaseVisionTask
from shoplens.errors import ModelError, UsageError
from shoplens.internal.atomic import sha256_file
from shoplens.open_set import OpenSetProfile
from shoplens.options import ImageEmbedderOptions, RunningMode
from shoplens.postprocess import l2_normalize
from shoplens.results import EmbeddingResult, Timing

__all__ = ["Embedder", "EmbeddingResult"]


class Embedder(BaseVisionTask):
    """Embed camera frames with an embedding ``.tflite``. Thread-safe, like the Classifier.

    Args:
      options: :class:`~shoplens.options.ImageEmbedderOptions`; or build one with
        :meth:`create_from_model_path` and keywords.

    Raises:
      ModelError: the model is a classifier, not an embedding model, or is not (1, H, W, C) -> (1, D).
      UsageError: LIVE_STREAM mode (embed the frames a live classifier keeps).
    """

    OPTIONS: ClassVar[type[ImageEmbedderOptions]] = ImageEmbedderOptions
    options: ImageEmbedderOptions

    def __init__(self, options: ImageEmbedderOptions) -> None:
        super().__init__(options)
        meta = self.info.shoplens_metadata or {}
        if meta.get("output") not in (None, "embedding"):
            raise ModelError(
                f"{self.model_name} is a {meta.get('output')} model, not an embedding model; "
                "make one with 'shoplens convert --embedding'"
            )
        self.dim = int(self._out_tensor.shape[1])
        profile = self.options.open_set.profile
        if isinstance(profile, OpenSetProfile):
            if profile.dim != self.dim:
                raise UsageError(f"the open-set profile is for {profile.dim}-dim embeddings; "
                                 f"{self.model_name} gives {self.dim}")  # fmt: skip
            if not self.options.l2_normalize:
                raise UsageError("the open-set profile was fitted on unit-length vectors; keep l2_normalize")
            if profile.model_sha256 and profile.model_sha256 != self._model_sha256():
                raise UsageError(f"the open-set profile was fitted for another embedding model (sha256 "
                                 f"{profile.model_sha256[:12]}...): fit one for {self.model_name} "
                                 "(OpenSetProfile.fit; docs/sdk.md)")  # fmt: skip

    def _model_sha256(self) -> str:
        base = self.options.base_options
        if base.model_asset_buffer is not None:
            return hashlib.sha256(base.model_asset_buffer).hexdigest()
        return sha256_file(str(base.model_asset_path))

    def _read_labels(self, options: Any, meta: dict[str, Any] | None, n_outputs: int) -> None:
        self.labels: tuple[str, ...] = ()  # the entries of an embedding have no names
        self.categories = tuple(str(x) for x in (meta or {}).get("labels", ()))  # the classifier's

    def __repr__(self) -> str:
        return f"Embedder(model={self.model_name!r}, dim={self.dim}, contract={self.contract.describe()!r})"

    def _finish(self, raw: np.ndarray) -> np.ndarray:
        v = np.asarray(raw, np.float32)
        return l2_normalize(v) if self.options.l2_normalize else v

    def embed_preprocessed(self, inputs: np.ndarray) -> np.ndarray:
        """Embeddings (N, D) for inputs already made by :attr:`preprocessor` (N, H, W, C).

        Raises:
          InvalidFrameError: the inputs' shape or dtype is not the model's.
        """
        return self._finish(self._predict_raw(inputs))

    def _embed(self, frame: object, ts: int | None) -> EmbeddingResult:
        with self._lock:
            if self._closed:
                raise UsageError("this Embedder is closed")
            raw = self._run_frame(frame)
            t2 = time.perf_counter()
            if ts is not None:
                self._last_ts = ts
            vec = None if raw.values is None else self._finish(raw.values)
            timing = Timing(raw.preprocess_ms, raw.invoke_ms, (time.perf_counter() - t2) * 1e3, raw.colour_ms)
            return EmbeddingResult(vec, timing, raw.verdict, ts, raw.colours)

    def is_product(self, hits: Sequence[Any] = (), *, embedding: np.ndarray | None = None) -> bool | None:
        """The open-set answer for a frame this Embedder embedded (``options.open_set``).

        Args:
          hits: the search hits of its embedding, nearest first (:meth:`~shoplens.CatalogIndex.search`);
            each has ``score``, the cosine similarity. Judged when ``min_similarity`` is set.
          embedding: its embedding; judged by the open-set profile (the distance to the nearest class)
            when one is set.

        Returns:
          False ("no product recognised") when a set check fails: the nearest product is less similar
          than ``min_similarity``, or nothing was found; the embedding is farther from every class
          than the profile's ``max_distance``. True when the set checks pass; None when none is set.

        Example:
          >>> e = emb.embed(frame).embedding  # doctest: +SKIP
          >>> emb.is_product(index.search(e, 5), embedding=e)  # doctest: +SKIP
          False
        """
        open_set = self.options.open_set
        verdict = None
        if open_set.min_similarity is not None:
            if not hits or open_set.judge(similarity=float(hits[0].score)) is False:
                return False
            verdict = True
        if open_set.profile is not None and embedding is not None:
            verdict = open_set.judge(embedding=embedding)
        return verdict

    def embed(self, frame: np.ndarray) -> EmbeddingResult:
        """IMAGE mode: embed one frame.

        Args:
          frame: a camera frame (HxWx3 BGR by default, gray, BGRA, or float in [0, 1]).

        Returns:
          An :class:`~shoplens.results.EmbeddingResult` (``embedding`` None if the gate rejected it).

        Raises:
          InvalidFrameError: the frame is None, empty, too small or of a wrong dtype or range.
        """
        self._check_mode(RunningMode.IMAGE, "embed")
        return self._embed(frame, None)

    def embed_batch(self, frames: Sequence[np.ndarray]) -> list[EmbeddingResult]:
        """IMAGE mode: several frames, one result each."""
        self._check_mode(RunningMode.IMAGE, "embed_batch")
        return [self._embed(f, None) for f in frames]

    def embed_for_video(self, frame: np.ndarray, timestamp_ms: int) -> EmbeddingResult:
        """VIDEO mode: frames in increasing timestamp order."""
        self._check_mode(RunningMode.VIDEO, "embed_for_video")
        return self._embed(frame, self._check_ts(timestamp_ms))
