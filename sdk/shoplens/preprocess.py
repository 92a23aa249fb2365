"""The one implementation of preprocessing: camera frame -> model input tensor.

Order of work, chosen for speed on large camera frames: validate, take the ROI and the crop as a
*view* (no copy), resize that view straight down to the model size, convert colour on the small
image, then normalize and quantize with a 256-entry lookup table written directly into the
destination (for the SDK, the interpreter's own input buffer). After the first frame of a given
shape, a uint8 frame costs no allocation.

Everything that feeds a model in ShopLens (calibration, evaluation, drift, golden vectors,
training of the reference model) goes through :class:`Preprocessor`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from shoplens.contract import ColorOrder, CropMode, Interpolation, PreprocessContract
from shoplens.errors import InvalidFrameError, UsageError

__all__ = [
    "MIN_FRAME_SIDE",
    "FrameView",
    "InputQuantization",
    "Preprocessor",
    "crop_box",
    "preprocess",
    "preprocess_batch",
    "resize_box",
    "validate_frame",
]

MIN_FRAME_SIDE = 8
FLOAT_SLACK = 1e-3  # float frames may overshoot [0, 1] by rounding, not by a factor of 255

_CV_INTERP = {
    Interpolation.AREA: cv2.INTER_AREA,
    Interpolation.LINEAR: cv2.INTER_LINEAR,
    Interpolation.NEAREST: cv2.INTER_NEAREST,
    Interpolation.CUBIC: cv2.INTER_CUBIC,
}

_SUPPORTED_OUT = (np.float32, np.uint8, np.int8, np.int16)


def _round_half_up(v: np.ndarray, magnitude: float) -> np.ndarray:
    """Round to the nearest integer, ties upwards.

    Quantizing [0, 255] to [-1, 1] puts every pixel exactly half a step off a level (the zero point
    is 127 or -1 for a mean of 127.5). Round-half-to-even would merge the pixel pairs (2k, 2k+1) into
    one level, a 7-bit input; ties upwards keep all 256 levels, and a uint8 input then equals the
    pixel, which is what MediaPipe feeds a uint8 model. The scale is stored as float32 (1/127.5 is
    0.0078431377) and float frames are normalized in float32, so a computed tie can land a few ulps
    of ``magnitude`` (the largest term that went into ``v``) below the half: those count too.
    """
    return np.floor(v + (0.5 + 1e-6 * (1.0 + magnitude)))


@dataclass(frozen=True)
class InputQuantization:
    """Affine quantization of a model input: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int
    dtype: type = np.int8

    def __post_init__(self) -> None:
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise UsageError(f"input quantization scale must be > 0, got {self.scale}")
        if np.dtype(self.dtype) not in (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int16)):
            raise UsageError(
                f"quantized input dtype must be uint8, int8 or int16, got {np.dtype(self.dtype)}"
            )


class FrameView(NamedTuple):
    """What preprocessing saw besides the tensor it wrote, handed on to the quality gate.

    ``resized`` is the crop at model size before colour conversion (a scratch buffer of the
    :class:`Preprocessor`: valid until its next frame); ``crop`` is the crop itself, a view of the
    frame (of its clipped copy for float frames). Nothing is copied to make it.
    """

    resized: np.ndarray
    crop: np.ndarray

    @property
    def crop_side(self) -> int:
        """Shorter side of the crop, in frame pixels."""
        return int(min(self.crop.shape[:2]))


def validate_frame(frame: object) -> np.ndarray:
    """Return ``frame`` as an image array, or raise InvalidFrameError saying what is wrong."""
    if frame is None:
        raise InvalidFrameError(
            "frame is None: the camera read failed (check that the camera is connected and not in use)"
        )
    if not isinstance(frame, np.ndarray):
        raise InvalidFrameError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.size == 0:
        raise InvalidFrameError(f"frame is empty (shape {frame.shape})")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim not in (2, 3):
        raise InvalidFrameError(
            f"frame must be HxW (gray) or HxWxC with C in 1, 3, 4; got {frame.ndim}-D shape {frame.shape}"
        )
    if frame.ndim == 3 and frame.shape[2] not in (3, 4):
        raise InvalidFrameError(
            f"frame has {frame.shape[2]} channels; expected 1 (gray), 3 (BGR/RGB) or 4 (BGRA)"
        )
    h, w = frame.shape[:2]
    if h < MIN_FRAME_SIDE or w < MIN_FRAME_SIDE:
        raise InvalidFrameError(f"frame is {w}x{h}; it must be at least {MIN_FRAME_SIDE}x{MIN_FRAME_SIDE}")
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype in (np.float32, np.float64):
        lo, hi = float(frame.min()), float(frame.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InvalidFrameError("frame contains NaN or inf values")
        if lo < -FLOAT_SLACK or hi > 1.0 + FLOAT_SLACK:
            raise InvalidFrameError(
                f"float frame values span [{lo:.4g}, {hi:.4g}]; float frames must be in [0, 1]: "
                "pass the uint8 frame, or divide a 0-255 float frame by 255"
            )
        return frame
    raise InvalidFrameError(f"frame dtype {frame.dtype} is not supported; use uint8 or float in [0, 1]")


def crop_box(
    frame_hw: tuple[int, int], contract: PreprocessContract, roi: Sequence[int] | None = None
) -> tuple[int, int, int, int]:
    """The (x, y, w, h) region of the frame that the contract's crop mode keeps."""
    fh, fw = frame_hw
    x0, y0, w, h = 0, 0, fw, fh
    if roi is not None:
        if len(roi) != 4:
            raise UsageError(f"roi must be (x, y, width, height), got {roi!r}")
        rx, ry, rw, rh = (int(v) for v in roi)
        x1, y1 = max(rx, 0), max(ry, 0)
        x2, y2 = min(rx + rw, fw), min(ry + rh, fh)
        if x2 - x1 < 1 or y2 - y1 < 1:
            raise InvalidFrameError(f"roi {tuple(roi)} lies outside the {fw}x{fh} frame")
        x0, y0, w, h = x1, y1, x2 - x1, y2 - y1
    if contract.crop is CropMode.CENTER:
        target = contract.width / contract.height
        if w / h > target:
            nw = max(1, round(h * target))
            x0 += (w - nw) // 2
            w = nw
        else:
            nh = max(1, round(w / target))
            y0 += (h - nh) // 2
            h = nh
    return x0, y0, w, h


@functools.lru_cache(maxsize=64)
def _grid_matrix(x: int, y: int, w: int, h: int, W: int, H: int) -> np.ndarray:
    """The inverse affine map of ``linear-mediapipe`` (cached: a camera's box rarely changes)."""
    m = np.array([[w / W, 0.0, x], [0.0, h / H, y]], np.float64)
    m.flags.writeable = False
    return m


def resize_box(
    src: np.ndarray,
    box: tuple[int, int, int, int],
    size: tuple[int, int],
    interpolation: Interpolation,
    dst: np.ndarray | None = None,
) -> np.ndarray:
    """Resize the ``box`` = (x, y, w, h) of ``src`` to ``size`` = (W, H) with the contract's filter.

    ``linear-mediapipe`` samples output pixel (i, j) at (x + i * w / W, y + j * h / H) in OpenCV's
    pixel-centre coordinates, bilinearly, with the border replicated: the affine map MediaPipe's
    OpenCV image-to-tensor converter builds from the ROI's corners to the tensor's corners. It
    reads through the whole ``src``, so it also reproduces MediaPipe's samples just outside an
    upscaled box. The other filters resize the box as a view with ``cv2.resize``.
    """
    x, y, w, h = box
    W, H = size
    if interpolation is Interpolation.LINEAR_MEDIAPIPE:
        m = _grid_matrix(x, y, w, h, W, H)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        if dst is None:
            return cv2.warpAffine(src, m, (W, H), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        res = cv2.warpAffine(src, m, (W, H), dst=dst, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    else:
        view = src[y : y + h, x : x + w]
        if dst is None:
            return cv2.resize(view, (W, H), interpolation=_CV_INTERP[interpolation])
        res = cv2.resize(view, (W, H), dst=dst, interpolation=_CV_INTERP[interpolation])
    if res.ctypes.data != dst.ctypes.data:  # pragma: no cover - defensive, cv2 reallocated
        dst[...] = res
    return dst


def _color_code(src_channels: int, input_order: ColorOrder, contract: PreprocessContract) -> int | None:
    rgb_in = input_order is ColorOrder.RGB
    if src_channels == 1:
        return None if contract.channels == 1 else cv2.COLOR_GRAY2BGR
    if contract.channels == 1:
        if src_channels == 4:
            return cv2.COLOR_RGBA2GRAY if rgb_in else cv2.COLOR_BGRA2GRAY
        return cv2.COLOR_RGB2GRAY if rgb_in else cv2.COLOR_BGR2GRAY
    same = (contract.color_order is ColorOrder.RGB) == rgb_in
    if src_channels == 4:
        return cv2.COLOR_BGRA2BGR if same else cv2.COLOR_BGRA2RGB
    return None if same else cv2.COLOR_BGR2RGB


class Preprocessor:
    """Turns frames into model input, reusing its scratch buffers.

    Not thread-safe (it owns scratch buffers); a Classifier serialises access with its lock.

    >>> c = PreprocessContract(96, 96)
    >>> pre = Preprocessor(c)
    >>> x = pre(np.zeros((480, 640, 3), np.uint8))
    >>> x.shape, x.dtype.name, float(x.min())
    ((96, 96, 3), 'float32', -1.0)
    """

    def __init__(
        self,
        contract: PreprocessContract,
        *,
        input_order: ColorOrder | str = ColorOrder.BGR,
        quantization: InputQuantization | None = None,
        dtype: type | np.dtype | None = None,
    ) -> None:
        self.contract = contract
        order = ColorOrder(input_order) if not isinstance(input_order, ColorOrder) else input_order
        if order is ColorOrder.GRAY:
            order = ColorOrder.BGR
        self.input_order = order
        self.quantization = quantization
        out_dtype = np.dtype(quantization.dtype if quantization else (dtype or np.float32))
        if quantization is not None and dtype is not None and np.dtype(dtype) != out_dtype:
            raise UsageError(f"dtype {np.dtype(dtype)} conflicts with quantized input dtype {out_dtype}")
        if out_dtype not in [np.dtype(t) for t in _SUPPORTED_OUT]:
            raise UsageError(
                f"unsupported model input dtype {out_dtype}; expected float32, uint8, int8, int16"
            )
        self.out_dtype = out_dtype
        self.out_shape = (contract.height, contract.width, contract.channels)
        self._magnitude = self._affine_magnitude()
        self._lut = self._build_lut()
        self._scratch: dict[tuple[int, str, str], np.ndarray] = {}

    # -- tables ---------------------------------------------------------------------------
    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (a, b) so that model_value = a * x + b for pixel x in [0, 255]."""
        mean = np.asarray(self.contract.mean, np.float64)
        std = np.asarray(self.contract.std, np.float64)
        a, b = 1.0 / std, -mean / std
        q = self.quantization
        if q is not None:
            a, b = a / q.scale, b / q.scale + q.zero_point
        return a, b

    def _affine_magnitude(self) -> float:
        """The largest term of ``a * x + b`` over pixels in [0, 255] (the scale of rounding error)."""
        a, b = self._affine()
        return float(np.max(np.abs(a)) * 255.0 + np.max(np.abs(b)))

    def _build_lut(self) -> np.ndarray:
        a, b = self._affine()
        x = np.arange(256, dtype=np.float64)[:, None]
        v = x * a[None, :] + b[None, :]
        if self.out_dtype.kind in "iu":
            info = np.iinfo(self.out_dtype)
            v = np.clip(_round_half_up(v, self._magnitude), info.min, info.max)
        lut = v.astype(self.out_dtype)
        if np.all(lut == lut[:, :1]):
            return np.ascontiguousarray(lut[:, 0])  # one table for all channels
        return np.ascontiguousarray(lut.reshape(256, 1, lut.shape[1]))

    def _buf(self, key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        k = (len(shape), key, dtype.str)
        buf = self._scratch.get(k)
        if buf is None or buf.shape != shape:
            buf = np.empty(shape, dtype)
            self._scratch[k] = buf
        return buf

    # -- the work -------------------------------------------------------------------------
    def __call__(
        self, frame: object, out: np.ndarray | None = None, *, roi: Sequence[int] | None = None
    ) -> np.ndarray:
        """Preprocess one frame into ``out`` (shape HxWxC, or 1xHxWxC) and return it.

        Args:
          frame: a camera frame: uint8 (gray, BGR/RGB or BGRA) or float in [0, 1].
          out: where to write (the interpreter's input buffer in the SDK); a new array if None.
          roi: (x, y, width, height) of the frame to use.

        Returns:
          ``out``, holding the model input.

        Raises:
          InvalidFrameError: None, empty, too small, wrong dtype or channels, NaN, or out of range.
        """
        if out is None:
            out = np.empty(self.out_shape, self.out_dtype)
        self.process(frame, out, roi=roi)
        return out

    def process(
        self, frame: object, out: np.ndarray, *, roi: Sequence[int] | None = None
    ) -> FrameView:
        """Preprocess one frame into ``out``; returns what the quality gate reads (no copies)."""
        f = validate_frame(frame)
        c = self.contract
        H, W = c.height, c.width
        target = out[0] if out.ndim == 4 else out
        if target.shape != self.out_shape or target.dtype != self.out_dtype:
            raise UsageError(
                f"output buffer is {target.shape} {target.dtype}, expected {self.out_shape} {self.out_dtype}"
            )
        x0, y0, w, h = crop_box(f.shape[:2], c, roi)
        view = f[y0 : y0 + h, x0 : x0 + w]
        src_c = 1 if f.ndim == 2 else f.shape[2]
        is_float = f.dtype != np.uint8
        work_dtype = np.dtype(np.float32) if is_float else np.dtype(np.uint8)
        if is_float:
            # clip before resizing: a huge finite value (or float64 beyond float32's range) would
            # become inf, and area/linear resizing of inf next to -inf gives NaN (found by fuzzing)
            view = np.clip(view, 0.0, 1.0).astype(np.float32, copy=False)
        rshape = (H, W) if src_c == 1 else (H, W, src_c)
        resized = self._buf("resize", rshape, work_dtype)
        # a float frame's clipped copy covers only the crop (for linear-mediapipe that differs from
        # reading through the frame only just outside an upscaled crop)
        src, box = (view, (0, 0, w, h)) if is_float else (f, (x0, y0, w, h))
        if c.crop is CropMode.LETTERBOX:
            scale = min(W / w, H / h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            ox, oy = (W - nw) // 2, (H - nh) // 2
            fill = c.letterbox_value / 255.0 if is_float else c.letterbox_value
            resized[...] = fill
            resized[oy : oy + nh, ox : ox + nw] = resize_box(src, box, (nw, nh), c.interpolation)
        else:
            resize_box(src, box, (W, H), c.interpolation, dst=resized)
        code = _color_code(src_c, self.input_order, c)
        cshape = (H, W) if c.channels == 1 else (H, W, 3)
        if code is None:
            colored = resized
        else:
            colored = self._buf("color", cshape, work_dtype)
            res = cv2.cvtColor(resized, code, dst=colored)
            if res.ctypes.data != colored.ctypes.data:
                colored[...] = res
        dst2 = target.reshape(cshape) if c.channels == 1 else target
        if is_float:
            self._normalize_float(colored, dst2)
        else:
            res = cv2.LUT(colored, self._lut, dst=dst2)
            if res.ctypes.data != dst2.ctypes.data:  # pragma: no cover - defensive, cv2 reallocated
                dst2[...] = res
        return FrameView(resized, view)

    def _normalize_float(self, img: np.ndarray, dst: np.ndarray) -> None:
        a, b = self._affine()
        chans = 1 if img.ndim == 2 else img.shape[2]
        a_ = (a * 255.0).astype(np.float32)[:chans] if chans > 1 else np.float32(a[0] * 255.0)
        b_ = b.astype(np.float32)[:chans] if chans > 1 else np.float32(b[0])
        v = np.clip(img, 0.0, 1.0) * a_ + b_
        if self.out_dtype.kind in "iu":
            info = np.iinfo(self.out_dtype)
            v = np.clip(_round_half_up(v, self._magnitude), info.min, info.max)
        dst[...] = v.astype(self.out_dtype, copy=False)


def preprocess(
    frame: object,
    contract: PreprocessContract,
    *,
    input_order: ColorOrder | str = ColorOrder.BGR,
    quantization: InputQuantization | None = None,
    roi: Sequence[int] | None = None,
) -> np.ndarray:
    """One-off preprocessing of a frame (builds a fresh Preprocessor; prefer the class in loops)."""
    return Preprocessor(contract, input_order=input_order, quantization=quantization)(frame, roi=roi)


def preprocess_batch(
    frames: Iterable[object],
    contract: PreprocessContract,
    *,
    input_order: ColorOrder | str = ColorOrder.BGR,
    quantization: InputQuantization | None = None,
    preprocessor: Preprocessor | None = None,
) -> np.ndarray:
    """Preprocess a batch of frames into one (N, H, W, C) array."""
    pre = preprocessor or Preprocessor(contract, input_order=input_order, quantization=quantization)
    frames = list(frames)
    out = np.empty((len(frames), *pre.out_shape), pre.out_dtype)
    for i, f in enumerate(frames):
        pre(f, out[i])
    return out
