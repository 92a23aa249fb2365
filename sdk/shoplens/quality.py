"""Quality gate: is this frame good enough to classify, or should the user re-take it?

The gate measures the image the model is about to see (the crop, already resized to the model
size by the preprocessor), so it costs a few microseconds rather than another pass over a large
camera frame:

* exposure: mean luminance and the fraction of clipped pixels (too dark, overexposed);
* blur: variance of the Laplacian of the downscaled gray crop; downscaling averages the sensor
  noise away, so what is left is real edge energy;
* size: a frame or ROI smaller than ``min_side`` pixels.

Default thresholds were calibrated on the kiosk generator's deliberately bad frames
(``benchmarks/calibrate_quality.py`` re-derives them and reports precision and recall).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from shoplens.errors import UsageError

__all__ = ["GATE_SIZE", "QualityOptions", "QualityPolicy", "QualityVerdict", "assess_quality", "gate_view"]


class QualityPolicy(str, Enum):
    OFF = "off"
    WARN = "warn"  # classify anyway, attach the verdict
    REJECT = "reject"  # return the verdict and a hint instead of a classification


HINTS = {
    "blur": "hold the item still",
    "dark": "more light",
    "overexposed": "too bright: avoid direct light on the item",
    "small": "move the item closer",
}


@dataclass(frozen=True)
class QualityOptions:
    policy: QualityPolicy = QualityPolicy.OFF
    min_sharpness: float = 70.0  # Laplacian variance of the 96x96 gray view of the crop
    min_brightness: float = 40.0  # mean luminance, 0..255
    max_brightness: float = 205.0
    max_clipped: float = 0.5  # fraction of pixels at 0..5 or 250..255
    min_side: int = 48  # smallest crop side in frame pixels

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "policy", QualityPolicy(self.policy))
        except ValueError:
            raise UsageError(f"unknown quality policy {self.policy!r}; use off, warn or reject") from None
        if not 0 <= self.min_brightness < self.max_brightness <= 255:
            raise UsageError(
                "need 0 <= min_brightness < max_brightness <= 255, "
                f"got {self.min_brightness}, {self.max_brightness}"
            )
        if not 0 < self.max_clipped <= 1:
            raise UsageError(f"max_clipped must be in (0, 1], got {self.max_clipped}")
        if self.min_sharpness < 0 or self.min_side < 1:
            raise UsageError("min_sharpness must be >= 0 and min_side >= 1")


@dataclass(frozen=True)
class QualityVerdict:
    ok: bool
    reasons: tuple[str, ...] = ()
    sharpness: float = float("nan")
    brightness: float = float("nan")
    clipped: float = float("nan")

    @property
    def hint(self) -> str:
        """A short user-facing prompt for the first reason, '' when the frame is fine."""
        return HINTS.get(self.reasons[0], "") if self.reasons else ""

    def to_dict(self) -> dict[str, object]:
        def num(v: float, nd: int) -> float | None:  # JSON has no NaN: unmeasured is null
            return None if v != v else round(v, nd)

        return {
            "ok": self.ok,
            "reasons": list(self.reasons),
            "hint": self.hint,
            "sharpness": num(self.sharpness, 2),
            "brightness": num(self.brightness, 2),
            "clipped": num(self.clipped, 4),
        }


UNCHECKED = QualityVerdict(True)


GATE_SIZE = 96  # thresholds are for a 96x96 view of the crop


def gate_view(resized: np.ndarray, crop: np.ndarray, *, resized_is_area: bool = True) -> np.ndarray:
    """The 96x96 area-averaged view the gate measures.

    Area averaging matters: it averages sensor noise away, so the Laplacian measures edges. The
    model's own resized crop is reused when it is exactly that (96x96, area); a bilinear view
    keeps the noise, and blurred frames would pass as sharp.
    """
    if resized_is_area and resized.shape[:2] == (GATE_SIZE, GATE_SIZE):
        return resized
    return cv2.resize(crop, (GATE_SIZE, GATE_SIZE), interpolation=cv2.INTER_AREA)


def assess_quality(small: np.ndarray, crop_side: int, options: QualityOptions) -> QualityVerdict:
    """Judge a 96x96 view of the crop (uint8 gray/3-channel, or float in [0, 1])."""
    img = small
    if img.dtype != np.uint8:
        img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    if img.ndim == 3:
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.shape[2] == 3 else img[:, :, 0]
    else:
        gray = img
    # cv2 reductions: several times cheaper than the numpy equivalents on a 96x96 image
    brightness = float(cv2.mean(gray)[0])
    clipped = 1.0 - cv2.countNonZero(cv2.inRange(gray, 6, 249)) / gray.size
    _, std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))
    sharpness = float(std[0, 0]) ** 2
    reasons = []
    if crop_side < options.min_side:
        reasons.append("small")
    if brightness < options.min_brightness:
        reasons.append("dark")
    elif brightness > options.max_brightness or (clipped > options.max_clipped and brightness > 127):
        reasons.append("overexposed")
    elif sharpness < options.min_sharpness:
        # only meaningful when exposure is fine: a dark frame has no edges to measure
        reasons.append("blur")
    return QualityVerdict(not reasons, tuple(reasons), sharpness, brightness, clipped)
