"""The core of every ShopLens vision task: what the Classifier and the Embedder share.

Loading and checking the model, the interpreter and its delegate, the preprocessing written
straight into the input buffer, the quality gate, and one lock. A frame goes one way through it:

    frame -> Preprocessor.process (tensor into the input buffer, FrameView) -> gate_frame(FrameView)
          -> invoke -> raw output -> the task's postprocessing (shoplens.postprocess) -> result

Each step hands its result to the next as a return value; nothing is read back from state a step
left behind. :class:`~shoplens.Classifier` and :class:`~shoplens.Embedder` add what their outputs
mean (categories with smoothing and streaming; unit embeddings).
"""

from __future__ import annotations

import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Self

import numpy as np

from shoplens.colour import ProductColour, WhiteBalance, colours_of, prepare_colour_names
from shoplens.contract import ColorOrder, Interpolation
from shoplens.errors import InvalidFrameError, ModelError, UsageError
from shoplens.model_meta import resolve_contract
from shoplens.options import BaseOptions, RunningMode, VisionTaskOptions
from shoplens.postprocess import dequantize
from shoplens.preprocess import InputQuantization, Preprocessor
from shoplens.quality import UNCHECKED, QualityPolicy, QualityVerdict, gate_frame
from shoplens.runtime import Backend, make_interpreter
from shoplens.tflite_model import TensorInfo, read_model_info

__all__ = ["BaseVisionTask", "RawOutput"]


class RawOutput(NamedTuple):
    """One frame's trip through the model: the dequantized output (None when the gate rejected
    the frame), the gate's verdict, the timings in ms and the product's colours (if asked)."""

    values: np.ndarray | None
    verdict: QualityVerdict
    preprocess_ms: float
    invoke_ms: float
    colours: tuple[ProductColour, ...] = ()
    colour_ms: float = 0.0


def _dequantized(q: np.ndarray, t: TensorInfo) -> np.ndarray:
    return dequantize(q, t.scales[0] if t.scales else None, t.zero_points[0] if t.zero_points else 0)


class BaseVisionTask:
    """A TFLite image model with one (1, H, W, C) input and one (1, N) output. Thread-safe."""

    OPTIONS: ClassVar[type[VisionTaskOptions]] = VisionTaskOptions
    NESTED_OPTIONS: ClassVar[dict[str, type]] = {}  # keyword groups create_from_model_path accepts

    def __init__(self, options: VisionTaskOptions) -> None:
        if not isinstance(options, self.OPTIONS):
            raise UsageError(
                f"{type(self).__name__} needs {self.OPTIONS.__name__}; "
                f"use {type(self).__name__}.create_from_model_path()"
            )
        self.options = options
        bo = options.base_options
        buffer = bo.model_asset_buffer
        model: bytes | Path = buffer if buffer is not None else Path(str(bo.model_asset_path))
        self.model_name = "<bytes>" if bo.model_asset_buffer is not None else str(bo.model_asset_path)
        self.info = read_model_info(model)
        if bo.probe_in_subprocess and not self.info.has_edgetpu_op:  # the TPU is not shareable with a child
            from shoplens._probe import probe_model

            backend = bo.backend.value if isinstance(bo.backend, Backend) else str(bo.backend)
            probe_model(model, backend=backend)
        if len(self.info.inputs) != 1:
            raise ModelError(f"{self.model_name} has {len(self.info.inputs)} inputs; a vision task needs one")
        if len(self.info.outputs) != 1:
            raise ModelError(
                f"{self.model_name} has {len(self.info.outputs)} outputs; ShopLens vision tasks read "
                "exactly one (1, K) output"
            )
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
        self._handle = make_interpreter(
            model, self.info, backend=bo.backend, delegate=bo.delegate, num_threads=bo.num_threads,
            device=bo.device, fallback_to_cpu=bo.fallback_to_cpu, cpu_kernels=bo.cpu_kernels,
        )  # fmt: skip
        self._interp = self._handle.interpreter
        in_detail = self._interp.get_input_details()[0]
        self._in_index = in_detail["index"]
        self._out_index = self._interp.get_output_details()[0]["index"]
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
        self._white_balance = WhiteBalance(options.colour.white_balance) if options.colour.enabled else None
        if self._white_balance is not None:
            prepare_colour_names()  # the naming table (0.25 s) now, not in the first frame's time
        self._rgb = ColorOrder(options.input_color_order) is ColorOrder.RGB
        self._lock = threading.RLock()
        self._closed = False
        self._last_ts: int | None = None

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def _options_from_keywords(cls, base: BaseOptions, kwargs: dict[str, Any]) -> VisionTaskOptions:
        """Task options from flat keywords: the task's own fields and its nested option groups'."""
        own = {f.name for f in fields(cls.OPTIONS) if f.init} - {"base_options"}
        groups: dict[str, dict[str, Any]] = {name: {} for name in cls.NESTED_OPTIONS}
        top: dict[str, Any] = {}
        for key, value in kwargs.items():
            group = next((g for g, t in cls.NESTED_OPTIONS.items()
                          if key in {f.name for f in fields(t)}), None)  # fmt: skip
            if key in own:
                top[key] = value
            elif group is not None:
                groups[group][key] = value
            else:
                nested = {f.name for t in cls.NESTED_OPTIONS.values() for f in fields(t)}
                base_names = {f.name for f in fields(BaseOptions)} - {"model_asset_path",
                                                                      "model_asset_buffer"}
                known = sorted(own | nested | base_names)
                raise UsageError(f"unknown option {key!r} for {cls.__name__}; known: {', '.join(known)}")
        for group, values in groups.items():
            if values:
                if group in top:
                    raise UsageError(f"give {group} or its fields ({', '.join(values)}), not both")
                top[group] = cls.NESTED_OPTIONS[group](**values)
        return cls.OPTIONS(base, **top)

    @classmethod
    def create_from_model_path(cls, model_path: str | Path, **kwargs: Any) -> Self:
        """IMAGE mode on the CPU unless the keywords say otherwise.

        Args:
          model_path: the ``.tflite`` file.
          **kwargs: any field of :class:`~shoplens.options.BaseOptions`, of the task's options, or
            of its nested option groups (for the Classifier: ``max_results``, ``score_threshold``,
            ``category_allowlist``, ``category_denylist``).

        Returns:
          The task, ready to use (close it, or use it in a ``with`` block).

        Raises:
          ModelError: the file is missing, corrupt or not a model this task runs.
          UsageError: an unknown or out-of-range option.
        """
        p = Path(model_path)
        if not p.exists():
            raise ModelError(f"model {p} does not exist")
        base_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in BaseOptions.__dataclass_fields__}
        return cls(cls._options_from_keywords(BaseOptions(model_asset_path=p, **base_kw), kwargs))

    @classmethod
    def create_from_bundle(
        cls, bundle_dir: str | Path, *, public_key: str | Path | bytes | None = None, probe: bool = True,
        **kwargs: Any,
    ) -> Self:  # fmt: skip
        """Load a bundle's model only after its manifest checks out.

        Args:
          bundle_dir: a device bundle (``shoplens bundle``).
          public_key: an Ed25519 public key (PEM); the detached ``manifest.sig`` must verify.
          probe: load and run the model once in a child process first, so even a model that
            crashes the runtime cannot take the kiosk down.
          **kwargs: options, as for :meth:`create_from_model_path`.

        Raises:
          DataError: a file does not match its sha256, or the signature does not verify.
        """
        from shoplens.bundle import verify_bundle

        d = Path(bundle_dir)
        verify_bundle(d, public_key=public_key)
        base_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in BaseOptions.__dataclass_fields__}
        base = BaseOptions(model_asset_path=d / "model.tflite", probe_in_subprocess=probe, **base_kw)
        return cls(cls._options_from_keywords(base, kwargs))

    @classmethod
    def create_from_options(cls, options: VisionTaskOptions) -> Self:
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

    @property
    def cpu_kernels(self) -> str:
        """The CPU kernels in use (``xnnpack`` or ``builtin``; ``auto`` says which it chose)."""
        return self._handle.cpu_kernels.value

    @property
    def kernel_ms(self) -> dict[str, float]:
        """``cpu_kernels='auto'``: the p50 invoke ms it measured for each at load (else empty)."""
        return dict(self._handle.kernel_ms)

    @property
    def preprocessor(self) -> Preprocessor:
        """The preprocessing this task applies (contract plus the input's quantization)."""
        return self._pre

    def _check_mode(self, mode: RunningMode, method: str) -> None:
        if self._closed:
            raise UsageError(f"this {type(self).__name__} is closed")
        if self.options.running_mode is not mode:
            raise UsageError(
                f"{method}() is for {mode.name} mode, but this {type(self).__name__} runs in "
                f"{self.options.running_mode.name} mode"
            )

    # -- the frame path -------------------------------------------------------------------
    def _run_frame(self, frame: object) -> RawOutput:
        """Preprocess into the input buffer, gate, invoke; the dequantized output (or None)."""
        t0 = time.perf_counter()
        buf = self._input_view()
        try:
            view = self._pre.process(frame, buf, roi=self.options.roi)
        finally:
            del buf  # the interpreter refuses to run while a view of its memory is alive
        q = self.options.quality
        verdict = UNCHECKED
        if q.policy is not QualityPolicy.OFF:
            area = self.contract.interpolation is Interpolation.AREA
            verdict = gate_frame(view.resized, view.crop, view.crop_side, q, resized_is_area=area)
        t1 = time.perf_counter()
        if not verdict.ok and q.policy is QualityPolicy.REJECT:
            return RawOutput(None, verdict, (t1 - t0) * 1e3, 0.0)
        colours: tuple[ProductColour, ...] = ()
        tc = t1
        if self._white_balance is not None and verdict.ok:  # a frame the gate faults gets no colour
            colours = colours_of(view.resized, self._white_balance, rgb=self._rgb)
            tc = time.perf_counter()
        self._invoke()
        t2 = time.perf_counter()
        raw = _dequantized(self._interp.get_tensor(self._out_index)[0], self._out_tensor)
        return RawOutput(raw, verdict, (t1 - t0) * 1e3, (t2 - tc) * 1e3, colours, (tc - t1) * 1e3)

    def _invoke(self) -> None:
        try:
            self._interp.invoke()
        except (RuntimeError, ValueError) as exc:  # a malformed model that passed the checks
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(
                f"{self.model_name}: the interpreter failed to run the model: {first[:300]}"
            ) from None

    def _predict_raw(self, inputs: np.ndarray) -> np.ndarray:
        """Dequantized outputs (N, K) for inputs already made by :attr:`preprocessor`."""
        x = np.asarray(inputs)
        want = (self._pre.out_shape, self._pre.out_dtype)
        if x.ndim != 4 or x.shape[1:] != want[0] or x.dtype != want[1]:
            raise InvalidFrameError(
                f"inputs are {x.shape} {x.dtype}; expected (N, {', '.join(map(str, want[0]))}) {want[1]}"
            )
        out = np.empty((len(x), self._out_tensor.shape[1]), np.float64)
        with self._lock:
            if self._closed:
                raise UsageError(f"this {type(self).__name__} is closed")
            for i in range(len(x)):
                self._interp.set_tensor(self._in_index, x[i : i + 1])
                self._invoke()
                out[i] = _dequantized(self._interp.get_tensor(self._out_index)[0], self._out_tensor)
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

    def _read_labels(self, options: Any, meta: dict[str, Any] | None, n_outputs: int) -> None:
        """Subclasses say what the output's entries are called (class labels, or nothing)."""
        raise NotImplementedError  # pragma: no cover

