"""Quality gate: is this frame good enough to classify, or should the user re-take it?

The gate measures the image the model is about to see (the crop, already resized to the model
size by the preprocessor), so it costs a few microseconds rather than another pass over a large
camera frame:

* exposure: mean luminance and the fraction of clipped pixels (too dark, overexposed);
* blur, in two stages. First a cheap measure on the model's own resized crop: the Laplacian's
  variance minus the part that Gaussian noise of the same mean absolute Laplacian would explain
  (``var - pi/2 * mean|L|^2``: edges are heavy-tailed, sensor noise is not). Clearly sharp or
  clearly blurred frames end there. Only in between does the gate pay for an area-averaged
  96x96 view of the crop, whose plain Laplacian variance is the more reliable measure (area
  averaging removes the noise that a bilinear view keeps);
* size: a frame or ROI smaller than ``min_side`` pixels.

Default thresholds were calibrated on the kiosk generator's deliberately bad frames (seed 7;
the band 5..25 keeps the area view to about 5 % of good frames, so the gate stays under 10 % of
the frame time;
``python -m benchmarks.calibrate_quality`` re-derives them); ``make bench`` reports precision,
recall and the gate's cost on a different seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from shoplens.errors import UsageError

__all__ = [
    "GATE_SIZE",
    "QualityOptions",
    "QualityPolicy",
    "QualityVerdict",
    "area_view",
    "assess_quality",
    "gate_frame",
    "laplacian_variance",
    "noise_compensated_energy",
]


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
    """The quality gate: what it does with a bad frame (``policy``) and its thresholds.

    Args:
      policy: OFF, WARN (classify anyway, attach the verdict) or REJECT (no answer, a hint).
      the rest: thresholds, calibrated on the kiosk generator's bad frames (module docstring).

    Raises:
      UsageError: an unknown policy or thresholds out of order.

    Example:
      >>> QualityOptions("reject").policy.name
      'REJECT'
    """

    policy: QualityPolicy = QualityPolicy.OFF
    min_sharpness: float = 70.0  # Laplacian variance of the area-averaged 96x96 gray view of the crop
    fast_blurred_below: float = 5.0  # noise-compensated Laplacian energy of the model's view: blurred
    fast_sharp_above: float = 25.0  # ... sharp; in between the area view decides
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
        if not self.fast_blurred_below <= self.fast_sharp_above:
            raise UsageError(
                f"need fast_blurred_below <= fast_sharp_above, got {self.fast_blurred_below}, "
                f"{self.fast_sharp_above}"
            )


@dataclass(frozen=True)
class QualityVerdict:
    """The gate's verdict on one frame: ``ok``, the ``reasons`` (dark, overexposed, blur, small),
    a user-facing ``hint`` and the measurements behind it."""

    ok: bool
    reasons: tuple[str, ...] = ()
    sharpness: float = float("nan")  # area-view Laplacian variance (NaN when the fast stage decided)
    brightness: float = float("nan")
    clipped: float = float("nan")  # measured only when the frame is bright (mean > 127)
    fast_sharpness: float = float("nan")  # noise-compensated Laplacian energy of the model's view

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
            "fast_sharpness": num(self.fast_sharpness, 2),
        }


UNCHECKED = QualityVerdict(True)


GATE_SIZE = 96  # thresholds are for a 96x96 view of the crop


def _gray(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8:
        img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    if img.ndim == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.shape[2] == 3 else img[:, :, 0]
    return img


def area_view(crop: np.ndarray) -> np.ndarray:
    """The 96x96 area-averaged view of the crop (averages sensor noise away)."""
    return cv2.resize(crop, (GATE_SIZE, GATE_SIZE), interpolation=cv2.INTER_AREA)


def laplacian_variance(gray: np.ndarray) -> float:
    _, std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))
    return float(std[0, 0]) ** 2


def noise_compensated_energy(gray: np.ndarray) -> float:
    """Laplacian variance minus what Gaussian noise with the same mean |Laplacian| would give.

    Three reductions over the Laplacian (L1 and squared L2 norms, the sum), no temporaries.
    """
    lap = cv2.Laplacian(gray, cv2.CV_16S)
    n = lap.size
    mean_abs = cv2.norm(lap, cv2.NORM_L1) / n
    mean = cv2.sumElems(lap)[0] / n
    var = cv2.norm(lap, cv2.NORM_L2SQR) / n - mean * mean
    return float(var - (np.pi / 2) * mean_abs * mean_abs)


def gate_frame(
    resized: np.ndarray, crop: np.ndarray, crop_side: int, options: QualityOptions, *, resized_is_area: bool
) -> QualityVerdict:
    """Judge a frame from the preprocessor's resized crop (and, only if needed, the crop itself).

    The cheap first stage needs the model's view to be 96x96 (the thresholds' scale); for other
    model sizes the area view of the crop is measured directly.
    """
    native = resized.shape[:2] == (GATE_SIZE, GATE_SIZE)
    if not native:
        resized, resized_is_area = area_view(crop), True
    gray = _gray(resized)
    brightness = float(cv2.mean(gray)[0])
    clipped = float("nan")  # only needed (and measured) for bright frames
    if brightness > 127:
        clipped = 1.0 - cv2.countNonZero(cv2.inRange(gray, 6, 249)) / gray.size
    reasons = []
    if crop_side < options.min_side:
        reasons.append("small")
    fast = sharp = float("nan")
    if brightness < options.min_brightness:
        reasons.append("dark")
    elif brightness > options.max_brightness or (clipped > options.max_clipped and brightness > 127):
        reasons.append("overexposed")
    else:  # blur is only meaningful when exposure is fine: a dark frame has no edges to measure
        if resized_is_area:
            sharp = laplacian_variance(gray)
            blurred = sharp < options.min_sharpness
        else:
            fast = noise_compensated_energy(gray)
            if fast < options.fast_blurred_below:
                blurred = True
            elif fast >= options.fast_sharp_above:
                blurred = False
            else:
                sharp = laplacian_variance(_gray(area_view(crop)))
                blurred = sharp < options.min_sharpness
        if blurred:
            reasons.append("blur")
    return QualityVerdict(not reasons, tuple(reasons), sharp, brightness, clipped, fast)


def assess_quality(small: np.ndarray, crop_side: int, options: QualityOptions) -> QualityVerdict:
    """Judge one already area-averaged view of the crop (uint8 gray/BGR, or float in [0, 1])."""
    view = small if small.shape[:2] == (GATE_SIZE, GATE_SIZE) else area_view(small)
    return gate_frame(view, view, crop_side, options, resized_is_area=True)
