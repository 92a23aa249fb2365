"""The preprocessing contract: how a model wants its input.

The converter writes it into the model's metadata; the SDK reads it back. Calibration,
evaluation, drift and golden vectors all go through ``shoplens.preprocess`` with this contract,
so there is exactly one implementation of preprocessing.

A pixel value ``x`` in [0, 255] (after colour conversion, crop and resize) becomes
``(x - mean[c]) / std[c]`` for the float model input. Quantized inputs then apply the input
tensor's scale and zero point.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from shoplens.errors import DataError, UsageError

__all__ = ["ColorOrder", "CropMode", "Interpolation", "PreprocessContract"]

CONTRACT_VERSION = 1


class ColorOrder(str, Enum):
    RGB = "RGB"
    BGR = "BGR"
    GRAY = "GRAY"


class CropMode(str, Enum):
    CENTER = "center"  # largest centred region with the model's aspect ratio
    LETTERBOX = "letterbox"  # whole frame, scaled to fit, padded
    STRETCH = "stretch"  # whole frame, aspect ratio ignored


class Interpolation(str, Enum):
    AREA = "area"
    LINEAR = "linear"  # OpenCV's bilinear resize: output pixel i samples (i + 0.5) * scale - 0.5
    NEAREST = "nearest"
    CUBIC = "cubic"
    # bilinear on MediaPipe's sampling grid: output pixel i samples left + i * scale, as MediaPipe's
    # image-to-tensor warp does (and TF1's resize_bilinear without half-pixel centres). A model with
    # this contract gets the same input tensor from ShopLens and from MediaPipe's ImageClassifier.
    LINEAR_MEDIAPIPE = "linear-mediapipe"


def _enum(cls: type[Enum], value: Any, what: str) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in cls)
        raise UsageError(f"unknown {what} {value!r}; choose one of: {choices}") from None


@dataclass(frozen=True)
class PreprocessContract:
    """What a model expects as input. Validated when built; serialised as JSON."""

    height: int
    width: int
    channels: int = 3
    color_order: ColorOrder = ColorOrder.RGB
    mean: tuple[float, ...] = (127.5, 127.5, 127.5)
    std: tuple[float, ...] = (127.5, 127.5, 127.5)
    interpolation: Interpolation = Interpolation.AREA
    crop: CropMode = CropMode.CENTER
    letterbox_value: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 8192:
                raise UsageError(f"contract {name} must be an int in [1, 8192], got {v!r}")
        if self.channels not in (1, 3):
            raise UsageError(f"contract channels must be 1 or 3, got {self.channels!r}")
        set_(self, "color_order", _enum(ColorOrder, self.color_order, "color order"))
        set_(self, "interpolation", _enum(Interpolation, self.interpolation, "interpolation"))
        set_(self, "crop", _enum(CropMode, self.crop, "crop mode"))
        if self.channels == 1:
            set_(self, "color_order", ColorOrder.GRAY)
        elif self.color_order is ColorOrder.GRAY:
            raise UsageError("a 3-channel contract needs color order RGB or BGR, not GRAY")
        mean = tuple(float(m) for m in self.mean)
        std = tuple(float(s) for s in self.std)
        if len(mean) == 1:
            mean = mean * self.channels
        if len(std) == 1:
            std = std * self.channels
        if len(mean) != self.channels or len(std) != self.channels:
            raise UsageError(f"mean and std need 1 or {self.channels} values, got {len(mean)} and {len(std)}")
        if any(not math.isfinite(m) for m in mean) or any(not math.isfinite(s) or s <= 0 for s in std):
            raise UsageError(f"mean must be finite and std finite and > 0, got mean={mean} std={std}")
        set_(self, "mean", mean)
        set_(self, "std", std)
        if not 0 <= int(self.letterbox_value) <= 255:
            raise UsageError(f"letterbox_value must be in [0, 255], got {self.letterbox_value}")
        set_(self, "extra", dict(self.extra))

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def from_range(cls, height: int, width: int, low: float, high: float, **kw: Any) -> PreprocessContract:
        """A contract that maps [0, 255] linearly onto [low, high] (e.g. [0, 1] or [-1, 1])."""
        if not high > low:
            raise UsageError(f"value range needs high > low, got [{low}, {high}]")
        std = 255.0 / (high - low)
        mean = -low * std
        ch = int(kw.get("channels", 3))
        return cls(height, width, mean=(mean,) * ch, std=(std,) * ch, **kw)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessContract:
        if not isinstance(d, Mapping):
            raise DataError("preprocessing contract must be a JSON object")
        try:
            size = d["size"]
            return cls(
                height=int(size[0]),
                width=int(size[1]),
                channels=int(d.get("channels", 3)),
                color_order=d.get("color_order", "RGB"),
                mean=tuple(d.get("mean", (127.5,))),
                std=tuple(d.get("std", (127.5,))),
                interpolation=d.get("interpolation", "area"),
                crop=d.get("crop", "center"),
                letterbox_value=int(d.get("letterbox_value", 0)),
                extra=d.get("extra", {}),
            )
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            if isinstance(exc, UsageError):
                raise DataError(f"invalid preprocessing contract: {exc}") from None
            raise DataError(f"invalid preprocessing contract ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> PreprocessContract:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise DataError(f"preprocessing contract is not valid JSON: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> PreprocessContract:
        p = Path(path)
        try:
            return cls.from_json(p.read_bytes())
        except OSError as exc:
            raise DataError(f"cannot read contract {p}: {exc.strerror or exc}") from None

    # -- views ----------------------------------------------------------------------------
    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def value_range(self) -> tuple[float, float] | None:
        """(low, high) when all channels share one linear range, else None."""
        if len(set(self.mean)) != 1 or len(set(self.std)) != 1:
            return None
        return ((0.0 - self.mean[0]) / self.std[0], (255.0 - self.mean[0]) / self.std[0])

    @property
    def per_channel(self) -> bool:
        return self.value_range is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        out: dict[str, Any] = {
            "version": CONTRACT_VERSION,
            "size": [self.height, self.width],
            "channels": self.channels,
            "color_order": self.color_order.value,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation.value,
            "crop": self.crop.value,
            "letterbox_value": int(self.letterbox_value),
        }
        if d["extra"]:
            out["extra"] = dict(d["extra"])
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **changes: Any) -> PreprocessContract:
        d: dict[str, Any] = {
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "color_order": self.color_order,
            "mean": self.mean,
            "std": self.std,
            "interpolation": self.interpolation,
            "crop": self.crop,
            "letterbox_value": self.letterbox_value,
            "extra": self.extra,
        }
        d.update(changes)
        return PreprocessContract(**d)

    def describe(self) -> str:
        rng = self.value_range
        norm = f"range [{rng[0]:g}, {rng[1]:g}]" if rng else f"mean {list(self.mean)} std {list(self.std)}"
        return (
            f"{self.width}x{self.height}x{self.channels} {self.color_order.value}, {norm}, "
            f"{self.interpolation.value} resize, {self.crop.value} crop"
        )
