"""Options and results of :class:`shoplens.classifier.Classifier`.

Options are frozen dataclasses validated when built; results are plain immutable values with
``to_dict()`` for JSON. Kept apart from the classifier so the data shapes read in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.contract import ColorOrder, CropMode, PreprocessContract
from shoplens.errors import UsageError
from shoplens.quality import UNCHECKED, QualityOptions, QualityVerdict
from shoplens.runtime import Backend, Delegate, valid_device

__all__ = [
    "BaseOptions",
    "Category",
    "ClassificationResult",
    "ClassifierOptions",
    "ImageClassifierOptions",
    "RunningMode",
    "SmoothingOptions",
    "StreamStats",
    "Timing",
]


class RunningMode(str, Enum):
    IMAGE = "image"
    VIDEO = "video"
    LIVE_STREAM = "live_stream"


@dataclass(frozen=True)
class BaseOptions:
    """Where the model comes from and how it runs."""

    model_asset_path: str | Path | None = None
    model_asset_buffer: bytes | None = None
    num_threads: int = 1
    delegate: Delegate | str = Delegate.CPU
    device: str | None = None  # Edge TPU: "usb", "pci", ":N"
    fallback_to_cpu: bool = False
    backend: Backend | str = Backend.AUTO
    probe_in_subprocess: bool = False  # load and run once in a child first (untrusted model files)

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
        except ValueError as exc:
            raise UsageError(
                f"{exc}; delegates: cpu, edgetpu; back ends: auto, ai_edge_litert, tflite_runtime, tensorflow"
            ) from None
        object.__setattr__(self, "device", valid_device(self.device))


@dataclass(frozen=True)
class ClassifierOptions:
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


@dataclass(frozen=True)
class ImageClassifierOptions:
    base_options: BaseOptions
    classifier_options: ClassifierOptions = field(default_factory=ClassifierOptions)
    running_mode: RunningMode = RunningMode.IMAGE
    result_callback: Callable[[ClassificationResult, np.ndarray | None, int], None] | None = None
    input_color_order: ColorOrder | str = ColorOrder.BGR  # cameras come through OpenCV
    crop: CropMode | str | None = None  # None: the model's contract decides
    roi: tuple[int, int, int, int] | None = None  # (x, y, width, height) in frame pixels
    quality: QualityOptions = field(default_factory=QualityOptions)
    smoothing: SmoothingOptions = field(default_factory=SmoothingOptions)
    contract: PreprocessContract | None = None  # for models without ShopLens metadata
    labels: tuple[str, ...] | None = None  # overrides metadata and labels.txt
    labels_path: str | Path | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        try:
            set_(self, "running_mode", RunningMode(self.running_mode))
            set_(self, "input_color_order", ColorOrder(self.input_color_order))
            if self.crop is not None:
                set_(self, "crop", CropMode(self.crop))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if self.input_color_order is ColorOrder.GRAY:
            raise UsageError("input_color_order is the order of colour frames: BGR or RGB")
        if self.running_mode is RunningMode.LIVE_STREAM and self.result_callback is None:
            raise UsageError("LIVE_STREAM mode needs a result_callback")
        if self.running_mode is not RunningMode.LIVE_STREAM and self.result_callback is not None:
            raise UsageError(
                f"result_callback is only used in LIVE_STREAM mode, not {self.running_mode.name}"
            )
        if self.roi is not None:
            if len(self.roi) != 4 or self.roi[2] < 1 or self.roi[3] < 1:
                raise UsageError(f"roi must be (x, y, width, height) with positive size, got {self.roi!r}")
            set_(self, "roi", tuple(int(v) for v in self.roi))
        if self.labels is not None:
            set_(self, "labels", tuple(self.labels))


@dataclass(frozen=True)
class Category:
    index: int
    label: str
    score: float


@dataclass(frozen=True)
class Timing:
    preprocess_ms: float = 0.0
    invoke_ms: float = 0.0
    postprocess_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.invoke_ms + self.postprocess_ms


@dataclass(frozen=True)
class ClassificationResult:
    """Top-k categories (empty when the quality gate rejected the frame) and how we got them."""

    categories: tuple[Category, ...]
    timing: Timing
    quality: QualityVerdict = UNCHECKED
    timestamp_ms: int | None = None
    scores: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def rejected(self) -> bool:
        return not self.categories and not self.quality.ok

    @property
    def top(self) -> Category | None:
        return self.categories[0] if self.categories else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp_ms": self.timestamp_ms,
            "categories": [
                {"index": c.index, "label": c.label, "score": round(c.score, 6)} for c in self.categories
            ],
            "rejected": self.rejected,
            "quality": self.quality.to_dict(),
            "timing_ms": {
                "preprocess": round(self.timing.preprocess_ms, 4),
                "invoke": round(self.timing.invoke_ms, 4),
                "postprocess": round(self.timing.postprocess_ms, 4),
                "total": round(self.timing.total_ms, 4),
            },
        }


@dataclass
class StreamStats:
    """Every LIVE_STREAM frame is accounted for: processed, dropped (stale) or rejected."""

    submitted: int = 0
    processed: int = 0
    dropped: int = 0  # replaced by a newer frame before the worker took it
    rejected_invalid: int = 0
    rejected_quality: int = 0
    callback_errors: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


def invalid_result(ts: int) -> ClassificationResult:
    """The result a LIVE_STREAM callback receives for a frame that could not be used."""
    return ClassificationResult((), Timing(), QualityVerdict(False, ("invalid",)), ts)
