"""``shoplens.Classifier``: camera frame in, smoothed top-k categories out.

The API follows MediaPipe Tasks' ImageClassifier: frozen option dataclasses, a RunningMode with
one method per mode, a context manager. It adds what kiosks need: a quality gate, temporal
smoothing with hysteresis (VIDEO and LIVE_STREAM), latest-frame-wins streaming that never
blocks the camera thread, and thread safety.

    >>> from shoplens import Classifier
    >>> with Classifier.create_from_model_path("model.tflite") as clf:   # doctest: +SKIP
    ...     result = clf.classify(frame_bgr)
    ...     print(result.top.label, result.top.score)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from shoplens.contract import Interpolation
from shoplens.errors import InvalidFrameError, ModelError, ShopLensError, UsageError
from shoplens.model_meta import resolve_contract, resolve_labels
from shoplens.options import (
    BaseOptions,
    Category,
    ClassificationResult,
    ClassifierOptions,
    ImageClassifierOptions,
    RunningMode,
    SmoothingOptions,
    StreamStats,
    Timing,
    invalid_result,
)
from shoplens.preprocess import InputQuantization, Preprocessor
from shoplens.quality import UNCHECKED, QualityPolicy, QualityVerdict, gate_frame
from shoplens.runtime import Backend, make_interpreter
from shoplens.tflite_model import TensorInfo, read_model_info

__all__ = [
    "BaseOptions",
    "Category",
    "ClassificationResult",
    "Classifier",
    "ClassifierOptions",
    "ClassifierPool",
    "ImageClassifierOptions",
    "RunningMode",
    "SmoothingOptions",
    "StreamStats",
    "Timing",
]

log = logging.getLogger("shoplens.classifier")


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max()
    e = np.exp(z)
    out: np.ndarray = e / e.sum()
    return out


def _dequantize(q: np.ndarray, t: TensorInfo) -> np.ndarray:
    """Dequantize through int64 so (q - zero_point) cannot overflow (e.g. uint8 0 - 128)."""
    if not t.scales:
        return q.astype(np.float64)
    return (q.astype(np.int64) - int(t.zero_points[0])) * float(t.scales[0])


class Classifier:
    """Classify camera frames with a TFLite model. Thread-safe; use one per camera or a pool."""

    _embedding_model = False  # the Embedder reuses this class for an (1, D) embedding output

    def __init__(self, options: ImageClassifierOptions) -> None:
        if not isinstance(options, ImageClassifierOptions):
            raise UsageError(
                "Classifier needs ImageClassifierOptions; use Classifier.create_from_model_path()"
            )
        self.options = options
        bo = options.base_options
        model = bo.model_asset_buffer if bo.model_asset_buffer is not None else Path(bo.model_asset_path)  # type: ignore[arg-type]
        self.model_name = "<bytes>" if bo.model_asset_buffer is not None else str(bo.model_asset_path)
        self.info = read_model_info(model)
        if bo.probe_in_subprocess and not self.info.has_edgetpu_op:  # the TPU is not shareable with a child
            from shoplens._probe import probe_model

            backend = bo.backend.value if isinstance(bo.backend, Backend) else str(bo.backend)
            probe_model(model, backend=backend)
        if len(self.info.inputs) != 1:
            raise ModelError(
                f"{self.model_name} has {len(self.info.inputs)} inputs; a classifier needs exactly one"
            )
        if len(self.info.outputs) < 1:
            raise ModelError(f"{self.model_name} has no output")
        inp, out = self.info.inputs[0], self.info.outputs[0]
        if len(inp.shape) != 4 or inp.shape[0] != 1 or inp.shape[3] not in (1, 3):
            raise ModelError(
                f"{self.model_name} input shape {inp.shape} is not (1, H, W, C) with C in 1 or 3"
            )
        if len(out.shape) != 2 or out.shape[0] != 1:
            raise ModelError(f"{self.model_name} output shape {out.shape} is not (1, K)")
        meta = self.info.shoplens_metadata
        self.contract = resolve_contract(options, meta, inp, self.info.standard_metadata)
        if self._embedding_model:
            self.labels: tuple[str, ...] = ()
            self.categories = tuple(str(x) for x in (meta or {}).get("labels", ()))
        else:
            self.labels = resolve_labels(options, meta, self.info, out.shape[1])
        self.outputs_logits = bool(meta.get("output") == "logits") if meta else False
        self._handle = make_interpreter(
            model, self.info, backend=bo.backend, delegate=bo.delegate, num_threads=bo.num_threads,
            device=bo.device, fallback_to_cpu=bo.fallback_to_cpu,
        )  # fmt: skip
        self._interp = self._handle.interpreter
        in_detail = self._interp.get_input_details()[0]
        out_detail = self._interp.get_output_details()[0]
        self._in_index = in_detail["index"]
        self._out_index = out_detail["index"]
        self._input_view = self._interp.tensor(self._in_index)
        dtype = np.dtype(in_detail["dtype"])
        quant = None
        if dtype.kind in "iu":
            scale, zp = in_detail["quantization"]
            if not scale:
                raise ModelError(f"{self.model_name} has an integer input without quantization parameters")
            quant = InputQuantization(float(scale), int(zp), dtype.type)
        self._pre = Preprocessor(self.contract, input_order=options.input_color_order, quantization=quant,
                                 dtype=None if quant else dtype)  # fmt: skip
        self._out_tensor = out
        self._allowed = self._category_mask()
        self._lock = threading.RLock()
        self._closed = False
        self._last_ts: int | None = None
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

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def create_from_model_path(cls, model_path: str | Path, **kwargs: Any) -> Self:
        """Shortcut: IMAGE mode on the CPU; keyword arguments go to ImageClassifierOptions."""
        p = Path(model_path)
        if not p.exists():
            raise ModelError(f"model {p} does not exist")
        base_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in BaseOptions.__dataclass_fields__}
        return cls(ImageClassifierOptions(BaseOptions(model_asset_path=p, **base_kw), **kwargs))

    @classmethod
    def create_from_bundle(
        cls, bundle_dir: str | Path, *, public_key: str | Path | bytes | None = None, probe: bool = True,
        **kwargs: Any,
    ) -> Self:
        """Load a bundle's model only after its manifest checks out: the sha256 of every file, and
        with ``public_key`` (Ed25519, PEM) the detached signature ``manifest.sig``. ``probe`` loads
        and runs the model once in a child process first, so even a model that crashes the
        runtime cannot take the kiosk down. Keyword arguments go to ImageClassifierOptions."""
        from shoplens.bundle import verify_bundle

        d = Path(bundle_dir)
        verify_bundle(d, public_key=public_key)
        base_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in BaseOptions.__dataclass_fields__}
        base = BaseOptions(model_asset_path=d / "model.tflite", probe_in_subprocess=probe, **base_kw)
        return cls(ImageClassifierOptions(base, **kwargs))

    @classmethod
    def create_from_options(cls, options: ImageClassifierOptions) -> Classifier:
        return cls(options)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    @property
    def backend(self) -> str:
        return self._handle.backend.value

    @property
    def delegate(self) -> str:
        return self._handle.delegate.value

    def close(self) -> None:
        """Stop the LIVE_STREAM worker (if any) and release the interpreter. Idempotent."""
        if self._closed:
            return
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10)
        with self._lock:
            self._closed = True
            self._input_view = None
            self._interp = None

    # -- the work ---------------------------------------------------------------------------
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

    def _check_mode(self, mode: RunningMode, method: str) -> None:
        if self._closed:
            raise UsageError("this Classifier is closed")
        if self.options.running_mode is not mode:
            raise UsageError(
                f"{method}() is for {mode.name} mode, but this Classifier runs in "
                f"{self.options.running_mode.name} mode"
            )

    def _scores(self, frame: object) -> tuple[np.ndarray | None, QualityVerdict, float, float]:
        """Preprocess into the input buffer, gate, invoke; returns probabilities (or None)."""
        t0 = time.perf_counter()
        buf = self._input_view()
        try:
            self._pre(frame, buf, roi=self.options.roi)
        finally:
            del buf  # the interpreter refuses to run while a view of its memory is alive
        q = self.options.quality
        verdict = UNCHECKED
        pre = self._pre
        if q.policy is not QualityPolicy.OFF and pre.last_resized is not None and pre.last_crop is not None:
            verdict = gate_frame(
                pre.last_resized, pre.last_crop, pre.last_crop_side, q,
                resized_is_area=self.contract.interpolation is Interpolation.AREA,
            )  # fmt: skip
        t1 = time.perf_counter()
        if not verdict.ok and q.policy is QualityPolicy.REJECT:
            return None, verdict, (t1 - t0) * 1e3, 0.0
        self._invoke()
        t2 = time.perf_counter()
        return self._output_scores(), verdict, (t1 - t0) * 1e3, (t2 - t1) * 1e3

    def _invoke(self) -> None:
        try:
            self._interp.invoke()
        except (RuntimeError, ValueError) as exc:  # a malformed model that passed the checks
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(
                f"{self.model_name}: the interpreter failed to run the model: {first[:300]}"
            ) from None

    @property
    def preprocessor(self) -> Preprocessor:
        """The preprocessing this classifier applies (contract plus the input's quantization)."""
        return self._pre

    def predict_preprocessed(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities (N, K) for inputs already made by :attr:`preprocessor` (N, H, W, C).

        Evaluation and drift checks use this with :func:`shoplens.metrics.evaluate`, so a batch is
        preprocessed once by the same code as :meth:`classify` and then invoked frame by frame.
        """
        x = np.asarray(inputs)
        want = (self._pre.out_shape, self._pre.out_dtype)
        if x.ndim != 4 or x.shape[1:] != want[0] or x.dtype != want[1]:
            raise InvalidFrameError(
                f"inputs are {x.shape} {x.dtype}; expected (N, {', '.join(map(str, want[0]))}) {want[1]}"
            )
        out = np.empty((len(x), self._out_tensor.shape[1]), np.float32)
        with self._lock:
            if self._closed:
                raise UsageError("this Classifier is closed")
            for i in range(len(x)):
                self._interp.set_tensor(self._in_index, x[i : i + 1])
                self._invoke()
                out[i] = self._output_scores()
        return out

    def _output_scores(self) -> np.ndarray:
        raw = self._interp.get_tensor(self._out_index)[0]
        scores = _dequantize(raw, self._out_tensor)
        if self.outputs_logits or scores.min() < -1e-3 or scores.max() > 1 + 1e-3:
            scores = _softmax(scores)
        return scores

    def _top(self, scores: np.ndarray, shown: int | None = None) -> tuple[Category, ...]:
        opts = self.options.classifier_options
        s = np.where(self._allowed, scores, -1.0)
        order = np.argsort(-s, kind="stable")
        if shown is not None and self._allowed[shown]:
            order = np.concatenate([[shown], order[order != shown]])
        cats = []
        for i in order[: opts.max_results]:
            sc = float(scores[i])
            if s[i] < 0 or sc < opts.score_threshold:
                continue
            cats.append(Category(int(i), self.labels[i], sc))
        return tuple(cats)

    def _run(self, frame: object, ts: int | None, smooth: bool) -> ClassificationResult:
        with self._lock:
            if self._closed:
                raise UsageError("this Classifier is closed")
            scores, verdict, pre_ms, inv_ms = self._scores(frame)
            t2 = time.perf_counter()
            if scores is None:
                return ClassificationResult((), Timing(pre_ms, 0.0, 0.0), verdict, ts)
            shown = None
            if smooth:
                scores, shown = self._smooth(scores, ts)
            cats = self._top(scores, shown)
            post_ms = (time.perf_counter() - t2) * 1e3
            return ClassificationResult(cats, Timing(pre_ms, inv_ms, post_ms), verdict, ts, scores)

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

    def _check_ts(self, ts_ms: int) -> int:
        if not isinstance(ts_ms, (int, np.integer)) or isinstance(ts_ms, bool):
            raise UsageError(f"timestamp must be an int of milliseconds, got {ts_ms!r}")
        ts = int(ts_ms)
        if self._last_ts is not None and ts <= self._last_ts:
            raise UsageError(f"timestamps must increase: got {ts} ms after {self._last_ts} ms")
        return ts

    # -- public methods, one per running mode --------------------------------------------------
    def classify(self, frame: np.ndarray) -> ClassificationResult:
        """IMAGE mode: classify one frame (BGR by default)."""
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


from shoplens.pool import ClassifierPool  # noqa: E402  (re-export; the pool builds on Classifier)
