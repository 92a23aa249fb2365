"""The drift run: stream a dataset through both models and build the report."""

from __future__ import annotations

from typing import Any

import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.data.datasets import Dataset
from shoplens.drift.causes import likely_causes
from shoplens.drift.inputs import DeviceOutputs
from shoplens.drift.models import DriftModel, scores_for
from shoplens.drift.paired import MAX_LISTED_IDS, PairedMetrics
from shoplens.drift.report import (
    CAUSE_TRIGGER_AGREEMENT,
    CAUSE_TRIGGER_KL,
    CAUSE_TRIGGER_SCORE_DELTA,
    DriftReport,
)
from shoplens.errors import DataError
from shoplens.internal.progress import progress


def frame_verdicts(
    rs: np.ndarray, cs: np.ndarray, y: np.ndarray, ids: list[str], tolerance: float
) -> list[dict[str, Any]]:
    """Per frame (bundles): same top-1 and every score within ``tolerance``."""
    out = []
    for j in range(len(y)):
        mx = float(np.abs(rs[j] - cs[j]).max())
        out.append({
            "id": ids[j], "label": int(y[j]),
            "reference_top1": int(rs[j].argmax()), "candidate_top1": int(cs[j].argmax()),
            "max_abs_delta": round(mx, 6),
            "ok": bool(rs[j].argmax() == cs[j].argmax() and mx <= tolerance),
        })  # fmt: skip
    return out


def _contract_differences(a: PreprocessContract, b: PreprocessContract) -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    for key in ("size", "channels", "color_order", "interpolation", "crop"):
        va, vb = getattr(a, key), getattr(b, key)
        if va != vb:
            out[key] = (getattr(va, "value", va), getattr(vb, "value", vb))
    return out


def run_drift(
    reference: DriftModel,
    candidate: DriftModel | DeviceOutputs,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    cause_sample: int = 1000,
    analyse: bool | None = None,
    score_tolerance: float | None = None,
    show_progress: bool = False,
) -> DriftReport:
    """Stream ``dataset`` through both models and build the report (cause analysis included).

    ``analyse``: None runs the cause analysis when agreement is below 99 % or the candidate
    collapsed; True/False forces it on or off. ``score_tolerance`` adds a per-frame verdict
    (bundles).
    """
    import time

    k = len(reference.labels)
    if len(dataset.label_names) != k:
        raise DataError(f"{dataset.name} has {len(dataset.label_names)} classes, the reference model {k}")
    device = isinstance(candidate, DeviceOutputs)
    if isinstance(candidate, DriftModel):
        if len(candidate.labels) != k:
            raise DataError(
                f"the reference predicts {k} classes, the candidate {len(candidate.labels)}; "
                "they must share one label set"
            )
        if tuple(candidate.labels) != tuple(reference.labels):
            i = next(
                i for i, (a, b) in enumerate(zip(reference.labels, candidate.labels, strict=True)) if a != b
            )
            raise DataError(
                "the reference and the candidate have different label sets "
                f"(class {i}: {reference.labels[i]!r} vs {candidate.labels[i]!r})"
            )
    ref_pre = reference.preprocessor()
    ref_buf = np.empty((batch_size, *ref_pre.out_shape), ref_pre.out_dtype)
    if not device:
        cand_pre = candidate.preprocessor()  # type: ignore[union-attr]
        cand_buf = np.empty((batch_size, *cand_pre.out_shape), cand_pre.out_dtype)
    acc = PairedMetrics(k, max_ids=MAX_LISTED_IDS)
    sample_ids: list[str] = []
    sample_scores: list[np.ndarray] = []
    per_frame: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    if device:
        candidate.check_against(reference.labels, dataset.ids(), dataset.name)  # type: ignore[union-attr]
    cand_name = candidate.path.name if isinstance(candidate, DeviceOutputs) else candidate.name
    with progress(show_progress, f"drift {reference.name} vs {cand_name}", len(dataset)) as bar:
        for batch in dataset.batches(batch_size):
            m = len(batch)
            y = batch.labels
            if y.size and (int(y.max()) >= k or int(y.min()) < 0):
                raise DataError(f"dataset label {int(y.max())} is outside the model's {k} classes")
            rs = scores_for(reference, ref_pre, batch, ref_buf)
            if device:
                cs = np.stack([candidate.scores[i] for i in batch.ids])  # type: ignore[union-attr]
            else:
                cs = scores_for(candidate, cand_pre, batch, cand_buf)  # type: ignore[arg-type]
            acc.add(rs, cs, y, batch.ids)
            if len(sample_ids) < cause_sample:
                take = min(m, cause_sample - len(sample_ids))
                sample_ids.extend(batch.ids[:take])
                sample_scores.append(cs[:take])
            if score_tolerance is not None:
                per_frame.extend(frame_verdicts(rs, cs, y, batch.ids, score_tolerance))
            bar.advance(m)
    if acc.n == 0:
        raise DataError(f"dataset {dataset.name} yielded no images")
    report = DriftReport(
        reference=reference.name, candidate=cand_name, data=dataset.name, labels=tuple(reference.labels),
        metrics=acc.result(),
        contract_differences={} if device else _contract_differences(reference.contract, candidate.contract),  # type: ignore[union-attr]
        per_frame=per_frame,
    )
    if analyse is None:
        analyse = (
            report.agreement < CAUSE_TRIGGER_AGREEMENT
            or report.abs_delta_mean > CAUSE_TRIGGER_SCORE_DELTA
            or report.kl_mean > CAUSE_TRIGGER_KL
            or report.collapsed
            or any(not f["ok"] for f in per_frame)
        )
    if analyse:
        cand_sample = np.concatenate(sample_scores)
        report.cause_sample = len(cand_sample)
        base, causes = likely_causes(reference, dataset, sample_ids, cand_sample, batch_size=batch_size,
                                     show_progress=show_progress)  # fmt: skip
        report.cause_baseline_agreement, report.cause_baseline_mad = base
        report.causes = causes
    report.seconds = time.perf_counter() - t0
    return report
