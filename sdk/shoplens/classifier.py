"""``shoplens.Classifier``: camera frame in, smoothed top-k categories out.

The API follows MediaPipe Tasks' ImageClassifier: frozen option dataclasses, a RunningMode with
one method per mode, a context manager. It adds what kiosks need: a quality gate, temporal
smoothing with hysteresis (VIDEO and LIVE_STREAM), latest-frame-wins streaming that never
blocks the camera thread, and thread safety.

    >>> from shoplens import Classifier
    >>> with Classifier.create_from_model_path("model.tflite", max_results=3) as clf:  # doctest: +SKIP
    ...     result = clf.classify(frame_bgr)
    ...     print(result.top.label, result.top.score)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from shoplens._base_vision_task import BaseVisionTask
from shoplens.errors import InvalidFrameError, ShopLensError, UsageError
from shoplens.model_meta import resolve_labels
from shoplens.options import ClassifierOptions, ImageClassifierOptions, RunningMode
from shoplens.postprocess import to_probabilities, top_k
from shoplens.results import Category, ClassificationResult, StreamStats, Timing, invalid_result

__all__ = ["Classifier"]

log = logging.getLogger("shoplens.classifier")


class Classifier(BaseVisionTask):
    """Classify camera frames with a TFLite model. Thread-safe; use one per camera or a pool.

    Args:
      options: :class:`~shoplens.options.ImageClassifierOptions`; or build one with
        :meth:`create_from_model_path` and keywords.

    Raises:
      ModelError: the model is missing, corrupt, or not a (1, H, W, C) -> (1, K) classifier.
      UsageError: options that contradict each other, or an unknown category in a list.

    Example:
      >>> clf = Classifier.create_from_model_path("model.tflite", running_mode="video")  # doctest: +SKIP
      >>> clf.classify_for_video(frame, timestamp_ms=33).top                          # doctest: +SKIP
      Category(index=3, label='Dress', score=0.93)
    """

    OPTIONS: ClassVar[type[ImageClassifierOptions]] = ImageClassifierOptions
    NESTED_OPTIONS: ClassVar[dict[str, type]] = {"classifier_options": ClassifierOptions}
    options: ImageClassifierOptions

    def __init__(self, options: ImageClassifierOptions) -> None:
        if getattr(getattr(options, "open_set", None), "profile", None) is not None:
            raise UsageError("an open-set profile judges embeddings: give it to the Embedder "
                             "(the Classifier judges its score, min_score)")  # fmt: skip
        super().__init__(options)
        meta = self.info.shoplens_metadata
        self.outputs_logits: bool | None = None  # None: decide from the values
        if meta and meta.get("output") in ("logits", "probabilities"):
            self.outputs_logits = meta["output"] == "logits"
        self._allowed = self._category_mask()
        self._ema: np.ndarray | None = None
        self._shown: int | None = None
        # LIVE_STREAM worker state
        self.stream_stats = StreamStats()
        self._cond = threading.Condition()
        self._pending: tuple[np.ndarray, int] | None = None
        self._slots: list[np.ndarray | None] = [None, None, None]
        self._working: np.ndarray | None = None
        self._worker: threading.Thread | None = None
        self._stop = False
        self._last_submitted: int | None = None
        self._busy = False
        if options.running_mode is RunningMode.LIVE_STREAM:
            self._worker = threading.Thread(target=self._run_stream, name="shoplens-live-stream", daemon=True)
            self._worker.start()

    def _read_labels(self, options: Any, meta: dict[str, Any] | None, n_outputs: int) -> None:
        self.labels = resolve_labels(options, meta, self.info, n_outputs)

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.options.running_mode.name
        fb = ", fell back to cpu" if self._handle.fell_back else ""
        return (
            f"Classifier(model={self.model_name!r}, {len(self.labels)} classes, input "
            f"{self.info.inputs[0].dtype}{list(self.info.inputs[0].shape)}, "
            f"contract={self.contract.describe()!r}, "
            f"backend={self._handle.backend.value}, delegate={self._handle.delegate.value}{fb}, "
            f"threads={self.options.base_options.num_threads}, mode={state})"
        )

    def close(self) -> None:
        """Stop the LIVE_STREAM worker (if any) and release the interpreter. Idempotent."""
        if self._closed:
            return
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10)
        super().close()

    def _category_mask(self) -> np.ndarray:
        opts = self.options.classifier_options
        mask = np.ones(len(self.labels), bool)
        known = set(self.labels)
        for name in (*opts.category_allowlist, *opts.category_denylist):
            if name not in known:
                raise UsageError(f"category {name!r} is not one of the model's labels")
        if opts.category_allowlist:
            mask[:] = False
            for name in opts.category_allowlist:
                mask[self.labels.index(name)] = True
        for name in opts.category_denylist:
            mask[self.labels.index(name)] = False
        return mask

    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        return to_probabilities(raw, logits=self.outputs_logits)

    def _top(self, scores: np.ndarray, shown: int | None = None) -> tuple[Category, ...]:
        opts = self.options.classifier_options
        picks = top_k(scores, opts.max_results, allowed=self._allowed, threshold=opts.score_threshold,
                      first=shown)  # fmt: skip
        return tuple(Category(i, self.labels[i], sc) for i, sc in picks)

    def predict_preprocessed(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities (N, K) for inputs already made by :attr:`preprocessor` (N, H, W, C).

        Evaluation and drift checks use this with :func:`shoplens.metrics.evaluate`, so a batch is
        preprocessed once by the same code as :meth:`classify` and then invoked frame by frame.

        Raises:
          InvalidFrameError: the inputs' shape or dtype is not the model's.
        """
        return self._probabilities(self._predict_raw(inputs))

    def _run(self, frame: object, ts: int | None, smooth: bool) -> ClassificationResult:
        with self._lock:
            if self._closed:
                raise UsageError("this Classifier is closed")
            raw = self._run_frame(frame)
            t2 = time.perf_counter()
            if raw.values is None:
                return ClassificationResult((), Timing(raw.preprocess_ms, 0.0, 0.0), raw.verdict, ts)
            scores = self._probabilities(raw.values)
            shown = None
            if smooth:
                scores, shown = self._smooth(scores, ts)
            cats = self._top(scores, shown)
            is_product = None
            if self.options.open_set.min_score is not None:  # the shown answer's score (smoothed in a stream)
                is_product = bool(cats) and self.options.open_set.judge(score=cats[0].score) is True
            post_ms = (time.perf_counter() - t2) * 1e3
            timing = Timing(raw.preprocess_ms, raw.invoke_ms, post_ms, raw.colour_ms)
            return ClassificationResult(cats, timing, raw.verdict, ts, scores, raw.colours, is_product)

    def _smooth(self, scores: np.ndarray, ts: int | None) -> tuple[np.ndarray, int]:
        sm = self.options.smoothing
        if self._ema is None or (ts is not None and self._last_ts is not None
                                 and ts - self._last_ts > sm.reset_after_ms):  # fmt: skip
            self._ema = scores.copy()
            self._shown = int(np.argmax(np.where(self._allowed, scores, -1)))
        else:
            self._ema = sm.alpha * scores + (1 - sm.alpha) * self._ema
            best = int(np.argmax(np.where(self._allowed, self._ema, -1)))
            if self._shown is None or self._ema[best] > self._ema[self._shown] + sm.hysteresis:
                self._shown = best
        if ts is not None:
            self._last_ts = ts
        return self._ema, self._shown

    def classify(self, frame: np.ndarray) -> ClassificationResult:
        """IMAGE mode: classify one frame.

        Args:
          frame: a camera frame (HxWx3 BGR by default, gray, BGRA, or float in [0, 1]).

        Returns:
          A :class:`~shoplens.results.ClassificationResult`; with the quality gate on REJECT, a
          rejected frame gives no categories and the verdict's ``hint``.

        Raises:
          InvalidFrameError: the frame is None, empty, too small or of a wrong dtype or range.
          UsageError: the classifier is closed or not in IMAGE mode.
        """
        self._check_mode(RunningMode.IMAGE, "classify")
        return self._run(frame, None, smooth=False)

    def classify_batch(self, frames: Sequence[np.ndarray]) -> list[ClassificationResult]:
        """IMAGE mode: classify several frames; invalid frames raise InvalidFrameError."""
        self._check_mode(RunningMode.IMAGE, "classify_batch")
        return [self._run(f, None, smooth=False) for f in frames]

    def classify_for_video(self, frame: np.ndarray, timestamp_ms: int) -> ClassificationResult:
        """VIDEO mode: frames in timestamp order; scores are smoothed over time."""
        self._check_mode(RunningMode.VIDEO, "classify_for_video")
        with self._lock:
            ts = self._check_ts(timestamp_ms)
            return self._run(frame, ts, smooth=True)

    def classify_async(self, frame: np.ndarray, timestamp_ms: int) -> None:
        """LIVE_STREAM mode: hand a frame to the worker and return at once.

        The latest frame wins: a frame still waiting when a newer one arrives is dropped and
        counted in ``stream_stats.dropped``. The frame is copied (into one of three reused
        buffers), so the camera may reuse its own. The result reaches
        ``result_callback(result, frame, timestamp_ms)`` on the worker thread; ``frame`` is valid
        only during the callback (copy it to keep it).
        """
        self._check_mode(RunningMode.LIVE_STREAM, "classify_async")
        if not isinstance(timestamp_ms, (int, np.integer)) or isinstance(timestamp_ms, bool):
            raise UsageError(f"timestamp must be an int of milliseconds, got {timestamp_ms!r}")
        with self._cond:
            st = self.stream_stats
            st.submitted += 1
            if self._last_submitted is not None and timestamp_ms <= self._last_submitted:
                raise UsageError(
                    f"timestamps must increase: got {timestamp_ms} ms after {self._last_submitted} ms"
                )
            self._last_submitted = int(timestamp_ms)
            if not isinstance(frame, np.ndarray) or frame.size == 0:
                st.rejected_invalid += 1
                self._callback(invalid_result(int(timestamp_ms)), None, int(timestamp_ms))
                return
            # triple buffering: one slot is being processed, one may be pending, one is free
            pending = self._pending[0] if self._pending is not None else None
            slot = next(
                k
                for k, b in enumerate(self._slots)
                if b is None or (b is not pending and b is not self._working)
            )
            buf = self._slots[slot]
            if buf is None or buf.shape != frame.shape or buf.dtype != frame.dtype:
                buf = np.empty(frame.shape, frame.dtype)
                self._slots[slot] = buf
            np.copyto(buf, frame)
            if self._pending is not None:
                st.dropped += 1
            self._pending = (buf, int(timestamp_ms))
            self._cond.notify()

    def _callback(self, result: ClassificationResult, frame: np.ndarray | None, ts: int) -> None:
        cb = self.options.result_callback
        if cb is None:
            return
        try:
            cb(result, frame, ts)
        except Exception:  # a bad callback must not kill the stream
            self.stream_stats.callback_errors += 1
            log.exception("result_callback raised; the stream goes on")

    def _run_stream(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                frame, ts = self._pending  # type: ignore[misc]
                self._pending = None
                self._busy = True
                self._working = frame
            try:
                self._process_stream_frame(frame, ts)
            finally:
                with self._cond:
                    self._busy = False
                    self._working = None
                    self._cond.notify_all()

    def _process_stream_frame(self, frame: np.ndarray, ts: int) -> None:
        try:
            result = self._run(frame, ts, smooth=True)
        except InvalidFrameError as exc:
            with self._cond:
                self.stream_stats.rejected_invalid += 1
            log.warning("invalid frame at %d ms: %s", ts, exc)
            self._callback(invalid_result(ts), None, ts)
            return
        except ShopLensError as exc:  # closed underneath us
            log.debug("stream stopped: %s", exc)
            return
        with self._cond:
            if result.rejected:
                self.stream_stats.rejected_quality += 1
            else:
                self.stream_stats.processed += 1
        self._callback(result, frame, ts)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """LIVE_STREAM: wait until no frame is pending or in progress (callbacks included)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout=timeout)

