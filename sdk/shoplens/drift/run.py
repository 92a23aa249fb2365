"""The drift run: stream a dataset through both models and build the report."""

from __future__ import annotations

from typing import Any

import numpy as np

from shoplens._progress import progress
from shoplens.contract import PreprocessContract
from shoplens.data.datasets import Dataset
from shoplens.drift.causes import likely_causes
from shoplens.drift.inputs import DeviceOutputs
from shoplens.drift.models import DriftModel, scores_for
from shoplens.drift.report import (
    CAUSE_TRIGGER_AGREEMENT,
    CAUSE_TRIGGER_KL,
    CAUSE_TRIGGER_SCORE_DELTA,
    DriftReport,
    paired_bootstrap_ci,
)
from shoplens.errors import DataError
from shoplens.metrics import topk_hits

# -- the run ----------------------------------------------------------------------------------
MAX_LISTED_IDS = 1000


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    eps = 1e-7
    p = np.clip(p, eps, 1.0)
    q = np.clip(q, eps, 1.0)
    kl: np.ndarray = np.sum(p * (np.log(p) - np.log(q)), axis=1)
    return kl


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
    ref_conf = np.zeros((k, k), np.int64)
    cand_conf = np.zeros((k, k), np.int64)
    ref_ok_parts: list[np.ndarray] = []
    cand_ok_parts: list[np.ndarray] = []
    ref_pred_counts = np.zeros(k, np.int64)
    cand_pred_counts = np.zeros(k, np.int64)
    sums = {"r1": np.zeros(k), "r2": np.zeros(k), "c1": np.zeros(k), "c2": np.zeros(k)}
    top5 = [0, 0]
    agree = 0
    kl_sum = 0.0
    ad_sum = 0.0
    ad_max = 0.0
    disagreeing: list[str] = []
    disagreeing_total = 0
    sample_ids: list[str] = []
    sample_scores: list[np.ndarray] = []
    per_frame: list[dict[str, Any]] = []
    n = 0
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
            rp, cp = rs.argmax(1), cs.argmax(1)
            np.add.at(ref_conf, (y, rp), 1)
            np.add.at(cand_conf, (y, cp), 1)
            ref_ok_parts.append(rp == y)
            cand_ok_parts.append(cp == y)
            ref_pred_counts += np.bincount(rp, minlength=k)
            cand_pred_counts += np.bincount(cp, minlength=k)
            for key, s in (("r", rs), ("c", cs)):
                sums[key + "1"] += s.sum(0)
                sums[key + "2"] += (s * s).sum(0)
            top5[0] += topk_hits(rs, y, 5)
            top5[1] += topk_hits(cs, y, 5)
            same = rp == cp
            agree += int(same.sum())
            kl_sum += float(_kl(rs, cs).sum())
            ad = np.abs(rs - cs)
            ad_sum += float(ad.mean(axis=1).sum())
            ad_max = max(ad_max, float(ad.max()))
            for j in np.flatnonzero(~same).tolist():
                disagreeing_total += 1
                if len(disagreeing) < MAX_LISTED_IDS:
                    disagreeing.append(batch.ids[j])
            if len(sample_ids) < cause_sample:
                take = min(m, cause_sample - len(sample_ids))
                sample_ids.extend(batch.ids[:take])
                sample_scores.append(cs[:take])
            if score_tolerance is not None:
                for j in range(m):
                    mx = float(ad[j].max())
                    per_frame.append({
                        "id": batch.ids[j], "label": int(y[j]),
                        "reference_top1": int(rp[j]), "candidate_top1": int(cp[j]),
                        "max_abs_delta": round(mx, 6),
                        "ok": bool(rp[j] == cp[j] and mx <= score_tolerance),
                    })  # fmt: skip
            n += m
            bar.advance(m)
    if n == 0:
        raise DataError(f"dataset {dataset.name} yielded no images")

    def spread(s1: np.ndarray, s2: np.ndarray) -> float:
        var = np.maximum(s2 / n - (s1 / n) ** 2, 0.0)
        return float(np.sqrt(var).mean())

    ref_ok, cand_ok = np.concatenate(ref_ok_parts), np.concatenate(cand_ok_parts)
    report = DriftReport(
        reference=reference.name,
        candidate=cand_name,
        data=dataset.name,
        labels=tuple(reference.labels),
        n=n,
        ref_confusion=ref_conf,
        cand_confusion=cand_conf,
        ref_top5=top5[0] / n,
        cand_top5=top5[1] / n,
        agreement=agree / n,
        kl_mean=max(0.0, kl_sum / n),
        abs_delta_mean=ad_sum / n,
        abs_delta_max=ad_max,
        drop_ci95=paired_bootstrap_ci(ref_ok, cand_ok),
        disagreeing_ids=disagreeing,
        disagreeing_total=disagreeing_total,
        ref_top_share=float(ref_pred_counts.max() / n),
        cand_top_share=float(cand_pred_counts.max() / n),
        cand_top_class=int(cand_pred_counts.argmax()),
        ref_score_spread=spread(sums["r1"], sums["r2"]),
        cand_score_spread=spread(sums["c1"], sums["c2"]),
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
