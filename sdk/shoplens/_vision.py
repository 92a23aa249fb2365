"""What every ShopLens image model shares: loading and checking the model, the interpreter and its
delegate, the preprocessing written straight into the input buffer, the quality gate, and one
lock. :class:`~shoplens.classifier.Classifier` and :class:`~shoplens.embedder.Embedder` add their
outputs (categories with smoothing and streaming; unit embeddings) on top.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Self

import numpy as np

from shoplens.contract import Interpolation
from shoplens.errors import InvalidFrameError, ModelError, UsageError
from shoplens.model_meta import resolve_contract
from shoplens.options import BaseOptions, ImageClassifierOptions, RunningMode
from shoplens.preprocess import InputQuantization, Preprocessor
from shoplens.quality import UNCHECKED, QualityPolicy, QualityVerdict, gate_frame
from shoplens.runtime import Backend, make_interpreter
from shoplens.tflite_model import TensorInfo, read_model_info

__all__ = ["ImageModel", "dequantize"]


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max()
    e = np.exp(z)
    out: np.ndarray = e / e.sum()
    return out


def dequantize(q: np.ndarray, t: TensorInfo) -> np.ndarray:
    """Dequantize through int64 so (q - zero_point) cannot overflow (e.g. uint8 0 - 128)."""
    if not t.scales:
        return q.astype(np.float64)
    return (q.astype(np.int64) - int(t.zero_points[0])) * float(t.scales[0])


class ImageModel:
    """A TFLite image model with one (1, H, W, C) input and one (1, N) output. Thread-safe."""

    def __init__(self, options: ImageClassifierOptions) -> None:
        if not isinstance(options, ImageClassifierOptions):
            raise UsageError(
                f"{type(self).__name__} needs ImageClassifierOptions; "
                f"use {type(self).__name__}.create_from_model_path()"
            )
        self.options = options
        bo = options.base_options
        path = bo.model_asset_path
        model: bytes | Path = bo.model_asset_buffer if bo.model_asset_buffer is not None else Path(str(path))
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
        self._read_labels(options, meta, out.shape[1])
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
        self._lock = threading.RLock()
        self._closed = False
        self._last_ts: int | None = None

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
    def create_from_options(cls, options: ImageClassifierOptions) -> Self:
        return cls(options)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backend(self) -> str:
        return self._handle.backend.value

    @property
    def delegate(self) -> str:
        return self._handle.delegate.value

    def _check_mode(self, mode: RunningMode, method: str) -> None:
        if self._closed:
            raise UsageError(f"this {type(self).__name__} is closed")
        if self.options.running_mode is not mode:
            raise UsageError(
                f"{method}() is for {mode.name} mode, but this {type(self).__name__} runs in "
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
                raise UsageError(f"this {type(self).__name__} is closed")
            for i in range(len(x)):
                self._interp.set_tensor(self._in_index, x[i : i + 1])
                self._invoke()
                out[i] = self._output_scores()
        return out

    def _check_ts(self, ts_ms: int) -> int:
        if not isinstance(ts_ms, (int, np.integer)) or isinstance(ts_ms, bool):
            raise UsageError(f"timestamp must be an int of milliseconds, got {ts_ms!r}")
        ts = int(ts_ms)
        if self._last_ts is not None and ts <= self._last_ts:
            raise UsageError(f"timestamps must increase: got {ts} ms after {self._last_ts} ms")
        return ts

    def close(self) -> None:
        """Release the interpreter. Idempotent."""
        with self._lock:
            self._closed = True
            self._input_view = None
            self._interp = None

    def _read_labels(
        self, options: ImageClassifierOptions, meta: dict[str, Any] | None, n_outputs: int
    ) -> None:
        """Subclasses say what the output's entries are called (class labels, or nothing)."""
        raise NotImplementedError  # pragma: no cover

    def _output_scores(self) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover

