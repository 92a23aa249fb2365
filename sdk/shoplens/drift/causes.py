"""Likely causes: the common on-device preprocessing mistakes, as contracts to re-run."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shoplens.contract import ColorOrder, CropMode, Interpolation, PreprocessContract
from shoplens.data.datasets import Batch, Dataset
from shoplens.drift.models import DriftModel, scores_for
from shoplens.drift.report import Alternative, CauseResult
from shoplens.errors import DataError
from shoplens.internal.progress import progress
from shoplens.preprocess import Preprocessor

# -- likely causes ----------------------------------------------------------------------------
_RANGES = {(0.0, 255.0): "[0, 255]", (0.0, 1.0): "[0, 1]", (-1.0, 1.0): "[-1, 1]"}


def alternatives(c: PreprocessContract) -> list[Alternative]:
    """The common on-device preprocessing mistakes, expressed as contracts."""
    out: list[Alternative] = []
    if c.channels == 3:
        other = ColorOrder.BGR if c.color_order is ColorOrder.RGB else ColorOrder.RGB
        out.append(Alternative(
            f"color_order={other.value}", c.replace(color_order=other),
            f"the device probably feeds {other.value} (the model expects {c.color_order.value})",
            f"{other.value} input",
        ))  # fmt: skip
    rng = c.value_range
    for (lo, hi), label in _RANGES.items():
        if rng is not None and abs(rng[0] - lo) < 1e-6 and abs(rng[1] - hi) < 1e-6:
            continue
        alt = PreprocessContract.from_range(
            c.height, c.width, lo, hi, channels=c.channels, color_order=c.color_order,
            interpolation=c.interpolation, crop=c.crop, letterbox_value=c.letterbox_value,
        )  # fmt: skip
        expected = f"[{rng[0]:g}, {rng[1]:g}]" if rng else "per-channel mean/std"
        out.append(Alternative(
            f"range={label}", alt,
            f"the device probably normalizes pixels to {label} (the model expects {expected})",
            f"inputs in {label}",
        ))  # fmt: skip
    resize_words = {i: f"{i.value} interpolation" for i in Interpolation}
    resize_words[Interpolation.LINEAR_MEDIAPIPE] = "MediaPipe's bilinear sampling grid"
    resize_words[Interpolation.LINEAR] = "OpenCV's bilinear resize (linear)"
    for interp in Interpolation:
        if interp is not c.interpolation:
            out.append(Alternative(
                f"interpolation={interp.value}", c.replace(interpolation=interp),
                f"the device probably resizes with {resize_words[interp]} "
                f"(the model expects {resize_words[c.interpolation]})",
                f"{interp.value} resize",
            ))  # fmt: skip
    crop_words = {
        CropMode.CENTER: "a center crop",
        CropMode.LETTERBOX: "letterboxing (whole frame, padded)",
        CropMode.STRETCH: "stretching the whole frame (aspect ratio ignored)",
    }
    for crop in CropMode:
        if crop is not c.crop:
            out.append(Alternative(
                f"crop={crop.value}", c.replace(crop=crop),
                f"the device probably uses {crop_words[crop]} (the model expects {crop_words[c.crop]})",
                f"{crop.value} crop",
            ))  # fmt: skip
    return out


def likely_causes(
    reference: DriftModel,
    dataset: Dataset,
    ids: Sequence[str],
    candidate_scores: np.ndarray,
    *,
    batch_size: int = 64,
    show_progress: bool = False,
) -> tuple[tuple[float, float], list[CauseResult]]:
    """Re-run the reference on the first ``len(ids)`` images with each alternative contract.

    Returns the baseline (agreement, mean |score delta|) of the reference's own contract on the
    same sample, and the alternatives ranked by agreement with the candidate, best first.
    """
    alts = alternatives(reference.contract)
    variants: list[tuple[Preprocessor, Alternative | None]] = [(reference.preprocessor(), None)]
    for a in alts:
        variants.append((reference.preprocessor(a.contract), a))
    want = len(ids)
    cand_pred = candidate_scores.argmax(1)
    agree = np.zeros(len(variants))
    mad = np.zeros(len(variants))
    bufs = [np.empty((batch_size, *p.out_shape), p.out_dtype) for p, _ in variants]
    seen = 0
    with progress(show_progress, "looking for the likely cause", want) as bar:
        for batch in dataset.batches(batch_size):
            if seen >= want:
                break
            take = min(len(batch), want - seen)
            part = Batch(batch.images[:take], batch.labels[:take], batch.ids[:take])
            if list(part.ids) != list(ids[seen : seen + take]):
                raise DataError(f"{dataset.name} did not yield the same images twice; cannot analyse causes")
            cs = candidate_scores[seen : seen + take]
            for v, ((pre, _), buf) in enumerate(zip(variants, bufs, strict=True)):
                s = scores_for(reference, pre, part, buf)
                agree[v] += float((s.argmax(1) == cand_pred[seen : seen + take]).sum())
                mad[v] += float(np.abs(s - cs).mean(axis=1).sum())
            seen += take
            bar.advance(take)
    if seen == 0:
        return (1.0, 0.0), []
    agree /= seen
    mad /= seen
    results = [CauseResult(a, float(agree[i + 1]), float(mad[i + 1])) for i, a in enumerate(alts)]
    results.sort(key=lambda r: (-r.agreement, r.mean_abs_delta))
    return (float(agree[0]), float(mad[0])), results
