"""Options of the vision tasks (:class:`~shoplens.Classifier`, :class:`~shoplens.Embedder`).

Frozen dataclasses validated when built, shaped like MediaPipe Tasks': ``BaseOptions`` (where the
model comes from and how it runs) nested in the task's options, a :class:`RunningMode` with one
method per mode. The results live in :mod:`shoplens.results`.

    >>> opts = ImageClassifierOptions(BaseOptions(model_asset_path="model.tflite"),
    ...                               classifier_options=ClassifierOptions(max_results=5))
    >>> opts.running_mode.name
    'IMAGE'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shoplens.colour import ColourOptions
from shoplens.contract import ColorOrder, CropMode, PreprocessContract
from shoplens.errors import UsageError
from shoplens.open_set import OpenSetOptions
from shoplens.quality import QualityOptions
from shoplens.runtime import Backend, CpuKernels, Delegate, valid_device

if TYPE_CHECKING:
    from shoplens.results import ClassificationResult

__all__ = [
    "BaseOptions",
    "ClassifierOptions",
    "ImageClassifierOptions",
    "ImageEmbedderOptions",
    "RunningMode",
    "SmoothingOptions",
    "VisionTaskOptions",
]


class RunningMode(str, Enum):
    """IMAGE: one frame at a time; VIDEO: frames with increasing timestamps, smoothed;
    LIVE_STREAM: frames handed to a worker, results to a callback, the latest frame wins."""

    IMAGE = "image"
    VIDEO = "video"
    LIVE_STREAM = "live_stream"


@dataclass(frozen=True)
class BaseOptions:
    """Where the model comes from and how it runs.

    Args:
      model_asset_path / model_asset_buffer: the ``.tflite`` file, or its bytes (exactly one).
      num_threads: CPU threads of the interpreter.
      delegate: ``cpu`` (XNNPACK) or ``edgetpu``; ``fallback_to_cpu`` when the Edge TPU is absent.
      device: the Edge TPU to use (``usb``, ``pci``, ``:N``).
      cpu_kernels: ``xnnpack`` (default), ``builtin`` (LiteRT's own kernels) or ``auto`` (times both
        at load, keeps the faster; worth it for models with large depthwise kernels: NASNet, ConvNeXt).
      backend: ``auto`` (LiteRT, then tflite-runtime), or one by name.
      probe_in_subprocess: load and run the model once in a child process first (untrusted files).

    Raises:
      UsageError: a value out of range or an unknown delegate or back end.
    """

    model_asset_path: str | Path | None = None
    model_asset_buffer: bytes | None = None
    num_threads: int = 1
    delegate: Delegate | str = Delegate.CPU
    device: str | None = None  # Edge TPU: "usb", "pci", ":N"
    fallback_to_cpu: bool = False
    backend: Backend | str = Backend.AUTO
    probe_in_subprocess: bool = False  # load and run once in a child first (untrusted model files)
    cpu_kernels: CpuKernels | str = CpuKernels.XNNPACK

    def __post_init__(self) -> None:
        if (self.model_asset_path is None) == (self.model_asset_buffer is None):
            raise UsageError("give exactly one of model_asset_path and model_asset_buffer")
        if (
            not isinstance(self.num_threads, int)
            or isinstance(self.num_threads, bool)
            or self.num_threads < 1
        ):
            raise UsageError(f"num_threads must be an int >= 1, got {self.num_threads!r}")
        try:
            object.__setattr__(self, "delegate", Delegate(self.delegate))
            object.__setattr__(self, "backend", Backend(self.backend))
            object.__setattr__(self, "cpu_kernels", CpuKernels(self.cpu_kernels))
        except ValueError as exc:
            raise UsageError(
                f"{exc}; delegates: cpu, edgetpu; back ends: auto, ai_edge_litert, tflite_runtime, "
                "tensorflow; cpu_kernels: xnnpack, builtin, auto"
            ) from None
        object.__setattr__(self, "device", valid_device(self.device))


@dataclass(frozen=True)
class ClassifierOptions:
    """Which categories a result lists: the best ``max_results`` with score >= ``score_threshold``,
    among the allowed ones (an allowlist or a denylist of labels)."""

    max_results: int = 3
    score_threshold: float = 0.0
    category_allowlist: tuple[str, ...] = ()
    category_denylist: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.max_results, int) or self.max_results < 1:
            raise UsageError(f"max_results must be an int >= 1, got {self.max_results!r}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise UsageError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        object.__setattr__(self, "category_allowlist", tuple(self.category_allowlist))
        object.__setattr__(self, "category_denylist", tuple(self.category_denylist))
        if self.category_allowlist and self.category_denylist:
            raise UsageError("category_allowlist and category_denylist are mutually exclusive")


@dataclass(frozen=True)
class SmoothingOptions:
    """Temporal smoothing for VIDEO and LIVE_STREAM: EMA of scores plus hysteresis."""

    alpha: float = 0.4  # weight of the newest frame in the moving average
    hysteresis: float = 0.1  # a new label must beat the current one by this much to take over
    reset_after_ms: int = 1500  # a gap this long starts afresh

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise UsageError(f"smoothing alpha must be in (0, 1], got {self.alpha}")
        if not 0 <= self.hysteresis < 1:
            raise UsageError(f"hysteresis must be in [0, 1), got {self.hysteresis}")
        if self.reset_after_ms < 0:
            raise UsageError("reset_after_ms must be >= 0")


_TASK_DOC = """
    Args:
      base_options: the model and how it runs (:class:`BaseOptions`).
      running_mode: IMAGE, VIDEO or LIVE_STREAM (see :class:`RunningMode`).
      input_color_order: the order of the frames' channels (OpenCV cameras give BGR).
      crop: override the contract's crop mode (center, letterbox, stretch).
      roi: (x, y, width, height) of the frame to look at.
      quality: the quality gate (:class:`~shoplens.quality.QualityOptions`; off by default).
      contract: the preprocessing contract for a model that carries none.
      colour: name the product's colours on every result (:class:`~shoplens.colour.ColourOptions`;
        off by default).
      open_set: when an answer is "not a product" (:class:`~shoplens.open_set.OpenSetOptions`; off
        by default): the Classifier's ``min_score``, the Embedder's ``min_similarity``.

    Raises:
      UsageError: a value out of range, or options that contradict each other.
    """


@dataclass(frozen=True)
class VisionTaskOptions:
    """What every vision task takes: the model, the running mode, and how frames are read."""

    base_options: BaseOptions
    running_mode: RunningMode = RunningMode.IMAGE
    input_color_order: ColorOrder | str = ColorOrder.BGR  # cameras come through OpenCV
    crop: CropMode | str | None = None  # None: the model's contract decides
    roi: tuple[int, int, int, int] | None = None  # (x, y, width, height) in frame pixels
    quality: QualityOptions = field(default_factory=QualityOptions)
    contract: PreprocessContract | None = None  # for models without ShopLens metadata
    colour: ColourOptions = field(default_factory=ColourOptions)
    open_set: OpenSetOptions = field(default_factory=OpenSetOptions)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.base_options, BaseOptions):
            raise UsageError(f"base_options must be BaseOptions, got {type(self.base_options).__name__}")
        try:
            set_(self, "running_mode", RunningMode(self.running_mode))
            set_(self, "input_color_order", ColorOrder(self.input_color_order))
            if self.crop is not None:
                set_(self, "crop", CropMode(self.crop))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if not isinstance(self.open_set, OpenSetOptions):
            raise UsageError(f"open_set must be OpenSetOptions, got {type(self.open_set).__name__}")
        if self.input_color_order is ColorOrder.GRAY:
            raise UsageError("input_color_order is the order of colour frames: BGR or RGB")
        if self.roi is not None:
            if len(self.roi) != 4 or self.roi[2] < 1 or self.roi[3] < 1:
                raise UsageError(f"roi must be (x, y, width, height) with positive size, got {self.roi!r}")
            set_(self, "roi", tuple(int(v) for v in self.roi))


VisionTaskOptions.__doc__ = (VisionTaskOptions.__doc__ or "") + _TASK_DOC


@dataclass(frozen=True, kw_only=True)
class ImageClassifierOptions(VisionTaskOptions):
    """Options of :class:`~shoplens.Classifier`: the vision task's, plus what a result lists,
    smoothing over time, the LIVE_STREAM callback and the labels.

    Args:
      classifier_options: max results, threshold, allow- and denylists (:class:`ClassifierOptions`).
      result_callback: LIVE_STREAM only: ``callback(result, frame, timestamp_ms)``.
      smoothing: VIDEO and LIVE_STREAM smoothing (:class:`SmoothingOptions`).
      labels / labels_path: labels for a model that carries none (they override its metadata).

    Example:
      >>> ImageClassifierOptions(BaseOptions(model_asset_path="model.tflite"),
      ...                        running_mode="video").running_mode.name
      'VIDEO'
    """

    classifier_options: ClassifierOptions = field(default_factory=ClassifierOptions)
    result_callback: Callable[[ClassificationResult, np.ndarray | None, int], None] | None = None
    smoothing: SmoothingOptions = field(default_factory=SmoothingOptions)
    labels: tuple[str, ...] | None = None  # overrides metadata and labels.txt
    labels_path: str | Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.running_mode is RunningMode.LIVE_STREAM and self.result_callback is None:
            raise UsageError("LIVE_STREAM mode needs a result_callback")
        if self.running_mode is not RunningMode.LIVE_STREAM and self.result_callback is not None:
            raise UsageError(
                f"result_callback is only used in LIVE_STREAM mode, not {self.running_mode.name}"
            )
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))


@dataclass(frozen=True, kw_only=True)
class ImageEmbedderOptions(VisionTaskOptions):
    """Options of :class:`~shoplens.Embedder` (IMAGE or VIDEO mode; a kiosk's LIVE_STREAM loop
    runs the classifier and embeds the frames it keeps).

    Args:
      l2_normalize: return unit-length embeddings (cosine similarity is then a dot product).

    Example:
      >>> ImageEmbedderOptions(BaseOptions(model_asset_path="embedding.tflite")).l2_normalize
      True
    """

    l2_normalize: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.running_mode is RunningMode.LIVE_STREAM:
            raise UsageError(
                "the Embedder runs in IMAGE or VIDEO mode; embed the frames a live classifier keeps"
            )
