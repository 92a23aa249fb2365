"""Catalog drift on Apache Beam: the same comparison, gate and report as ``shoplens drift``.

    catalog items --decode (dead letters)--> (id, image)
        --RunInference(LiteRT, reference)--> (id, probabilities) --+
        --RunInference(LiteRT, candidate) or device outputs ------+--CoGroupByKey by product id
        --> one row per slice (all, category=..., brand=...) --CombinePerKey(PairedMetricsCombineFn)
        --> the metrics per slice, the dead letters --> the driver: DriftReport, gate, likely cause

The metrics are :class:`shoplens.drift.paired.PairedMetrics`, the accumulator the in-process drift
folds over batches: here it is the state of a ``CombineFn``, so the two paths cannot drift apart.
Workers need only the runtime (numpy, OpenCV, LiteRT) and Beam. The likely-cause analysis re-runs
the reference on a sample in the driver, as ``shoplens drift`` does.
"""

from __future__ import annotations

import glob
import json
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from shoplens.beam.handler import LiteRTModelHandler
from shoplens.beam.items import (
    NAMESPACE,
    CatalogSpec,
    ReadCatalog,
    WriteLines,
    decode,
    failure_reason,
    open_catalog,
    quiet_pipeline,
)
from shoplens.beam.runners import pipeline_options
from shoplens.data.datasets import Batch, Dataset
from shoplens.drift.inputs import DeviceOutputs
from shoplens.drift.models import TFLiteDriftModel, to_probabilities
from shoplens.drift.paired import PairedMetrics
from shoplens.drift.report import (
    CAUSE_TRIGGER_AGREEMENT,
    CAUSE_TRIGGER_KL,
    CAUSE_TRIGGER_SCORE_DELTA,
    DriftReport,
)
from shoplens.errors import DataError

__all__ = ["CatalogDrift", "PairedMetricsCombineFn", "run_catalog_drift"]

ALL = "all"
Row = tuple[np.ndarray, np.ndarray, int, str]  # reference probabilities, candidate's, label, id


class PairedMetricsCombineFn(beam.CombineFn):  # type: ignore[misc]
    """``PairedMetrics`` as a Beam ``CombineFn``: add (reference, candidate, label, id) rows, merge
    the workers' partial accumulators, extract the accumulator itself."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def create_accumulator(self) -> PairedMetrics:
        return PairedMetrics(self.k)

    def add_input(self, acc: PairedMetrics, row: Row) -> PairedMetrics:
        return self.add_inputs(acc, [row])

    def add_inputs(self, acc: PairedMetrics, rows: Iterable[Row]) -> PairedMetrics:
        rows = list(rows)
        if rows:
            rs = np.stack([r[0] for r in rows])
            cs = np.stack([r[1] for r in rows])
            acc.add(rs, cs, np.array([r[2] for r in rows], np.int64), [r[3] for r in rows])
        return acc

    def merge_accumulators(self, accs: Iterable[PairedMetrics]) -> PairedMetrics:
        return PairedMetrics.merged(accs, self.k)

    def extract_output(self, acc: PairedMetrics) -> PairedMetrics:
        return acc


_inferred = Metrics.counter(NAMESPACE, "images_inferred")
_bad = Metrics.counter(NAMESPACE, "images_bad")


def _decode_with_meta(item: dict[str, Any], n_classes: int) -> tuple[str, tuple[Any, int, dict[str, str]]]:
    label = int(item.get("label", -1))
    if not 0 <= label < n_classes:
        cat = item.get("slices", {}).get("category", "")
        raise ValueError(f"category {cat!r} is not one of the model's labels")
    key, img = decode(item)
    return key, (img, label, dict(item.get("slices", {})))


def _probabilities(kv: tuple[str, Any]) -> tuple[str, np.ndarray]:
    _inferred.inc()
    return kv[0], to_probabilities(np.asarray(kv[1].inference)[None])[0]


def _slice_rows(kv: tuple[str, dict[str, list[Any]]], slices: Sequence[str]) -> list[tuple[str, Any]]:
    key, grouped = kv
    if not grouped["ref"] or not grouped["meta"]:
        return []
    if not grouped["cand"]:
        return [(MISSING, key)]
    rs, cs = grouped["ref"][0], grouped["cand"][0]
    label, cols = grouped["meta"][0]
    row = (rs, cs, label, key)
    out: list[tuple[str, Any]] = [(ALL, row)]
    for col in slices:
        out.append((f"{col}={cols.get(col, '')}", row))
    return out


MISSING = "__missing__"


def _state_line(slice_name: str, acc: PairedMetrics) -> str:
    return json.dumps({"slice": slice_name, "state": acc.to_state()})


def _missing_line(_slice: str, key: str) -> str:
    return json.dumps({"id": key, "reason": "no device output for this image"})


def _read_lines(tmp: str, kind: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in sorted(glob.glob(f"{tmp}/{kind}*")):
        with open(f, encoding="utf-8") as fh:
            out.extend(json.loads(line) for line in fh if line.strip())
    return out


def _dead_letter(bad: Any) -> str:
    item, err = bad
    _bad.inc()
    return json.dumps({"id": str(item.get("id", "")), "reason": failure_reason(err)})


@dataclass
class CatalogDrift:
    """What a catalog drift run returns: the report, per-slice metrics and the dead letters."""

    report: DriftReport
    slices: dict[str, PairedMetrics]
    dead_letters: list[dict[str, str]]
    bad: int
    total: int
    counters: dict[str, int] = field(default_factory=dict)
    runner: str = "direct"
    workers: int = 1
    seconds: float = 0.0

    @property
    def bad_share(self) -> float:
        return self.bad / max(self.total, 1)

    def slice_table(self) -> list[dict[str, Any]]:
        rows = []
        for name, acc in sorted(self.slices.items()):
            if name == ALL:
                continue
            r = acc.result()
            rows.append({"slice": name, "n": r.n, "reference_top1": round(r.ref_top1, 6),
                         "candidate_top1": round(r.cand_top1, 6), "drop_pts": round(r.drop, 4),
                         "drop_ci95_pts": [round(v, 4) for v in r.drop_ci95],
                         "agreement": round(r.agreement, 6)})  # fmt: skip
        return rows

    def check_gate(self, *, max_bad_pct: float, max_slice_drop: float | None, **limits: Any) -> list[str]:
        failures = self.report.check_gate(**limits)
        if 100 * self.bad_share > max_bad_pct:
            failures.append(
                f"{self.bad} of {self.total} catalog images ({100 * self.bad_share:.2f} %) could not be used "
                f"> --max-bad {max_bad_pct:g} %"
            )
        if max_slice_drop is not None:
            for s in self.slice_table():
                if s["drop_pts"] > max_slice_drop:
                    failures.append(
                        f"slice {s['slice']} drops {s['drop_pts']:.2f} pts > --max-slice-drop "
                        f"{max_slice_drop:g} ({s['n']} images)"
                    )
        self.report.gate["failures"] = failures
        self.report.gate["passed"] = not failures
        self.report.gate["max_bad_pct"] = max_bad_pct
        self.report.gate["max_slice_drop_pts"] = max_slice_drop
        return failures

    def to_dict(self) -> dict[str, Any]:
        d = self.report.to_dict()
        d["catalog"] = {
            "runner": self.runner, "workers": self.workers, "images": self.total, "bad": self.bad,
            "bad_share": round(self.bad_share, 6), "dead_letters": self.dead_letters[:1000],
            "slices": self.slice_table(), "counters": self.counters, "seconds": round(self.seconds, 2),
        }  # fmt: skip
        return d


def _device_items(outputs: DeviceOutputs) -> list[tuple[str, np.ndarray]]:
    return [(k, np.asarray(v)) for k, v in outputs.scores.items()]


def run_catalog_drift(
    reference: str | Path,
    candidate: str | Path,
    catalog: str,
    *,
    runner: str = "direct",
    workers: int = 2,
    slices: Sequence[str] = (),
    batch_size: int = 64,
    cause_sample: int = 1000,
    beam_args: Sequence[str] = (),
) -> CatalogDrift:
    """Compare ``candidate`` (a ``.tflite`` or a device-outputs file) with the reference ``.tflite``
    over a whole catalog on Beam (see the module docstring).

    Raises:
      ModelError: a model that does not load (checked in the driver before the pipeline starts).
      DataError: a missing, empty or malformed catalog or device-outputs file.
    """
    t0 = time.perf_counter()
    ref = TFLiteDriftModel(reference)  # loads here first: a broken model fails before any work
    k = len(ref.labels)
    device = Path(candidate).suffix.lower() in (".json", ".csv")
    outputs = DeviceOutputs.load(candidate) if device else None
    cand_name = Path(candidate).name
    if not device:
        cand_model = TFLiteDriftModel(candidate)
        if tuple(cand_model.labels) != tuple(ref.labels):
            raise DataError("the reference and the candidate have different label sets")
        cand_model.close()
    spec = open_catalog(catalog, ref.labels, slices=slices)
    with tempfile.TemporaryDirectory(prefix="shoplens-beam-") as tmp:
        with pipeline_options(runner, workers=workers, extra=beam_args) as opts:
            p = beam.Pipeline(options=opts)
            items = p | "Read" >> ReadCatalog(spec, slices)
            good, bad = items | "Decode" >> beam.Map(_decode_with_meta, k).with_exception_handling()
            images = good | "Images" >> beam.Map(lambda kv: (kv[0], kv[1][0]))
            meta = good | "Meta" >> beam.Map(lambda kv: (kv[0], (kv[1][1], kv[1][2])))

            def infer(name: str, model: str | Path) -> Any:
                handler = LiteRTModelHandler(model, min_batch_size=1, max_batch_size=batch_size)
                keyed = KeyedModelHandler(handler)
                scored = images | name >> RunInference(keyed)
                return scored | f"{name}Probabilities" >> beam.Map(_probabilities)

            ref_scores = infer("Reference", reference)
            if outputs is not None:
                cand_scores = p | "DeviceOutputs" >> beam.Create(_device_items(outputs))
            else:
                cand_scores = infer("Candidate", candidate)
            joined = {"ref": ref_scores, "cand": cand_scores, "meta": meta} | "Pair" >> beam.CoGroupByKey()
            rows = joined | "Slices" >> beam.FlatMap(_slice_rows, tuple(slices))
            missing = rows | "Missing" >> beam.Filter(lambda kv: kv[0] == MISSING)
            paired = rows | "Paired" >> beam.Filter(lambda kv: kv[0] != MISSING)
            states = paired | "Combine" >> beam.CombinePerKey(PairedMetricsCombineFn(k))
            _ = (states | "State" >> beam.MapTuple(_state_line)
                 | "WriteMetrics" >> WriteLines(f"{tmp}/metrics"))
            _ = bad | "Reasons" >> beam.Map(_dead_letter) | "WriteBad" >> WriteLines(f"{tmp}/bad")
            _ = (missing | "MissingIds" >> beam.MapTuple(_missing_line)
                 | "WriteMissing" >> WriteLines(f"{tmp}/missing"))
            with quiet_pipeline():
                result = p.run()
                result.wait_until_finish()
            counters = _counters(result)
        lines = {kind: _read_lines(tmp, kind) for kind in ("metrics", "bad", "missing")}
    dead = lines["bad"] + lines["missing"]
    by_slice: dict[str, PairedMetrics] = {}
    for st in lines["metrics"]:
        acc = PairedMetrics.from_state(st["state"])
        by_slice[st["slice"]] = by_slice[st["slice"]].merge(acc) if st["slice"] in by_slice else acc
    if ALL not in by_slice:
        example = f" ({len(dead)} bad, e.g. {dead[0]['id']}: {dead[0]['reason']})" if dead else ""
        raise DataError(f"none of the catalog's images could be used{example}")
    metrics = by_slice[ALL].result()
    report = DriftReport(reference=ref.name, candidate=cand_name, data=spec.name, labels=tuple(ref.labels),
                         metrics=metrics)  # fmt: skip
    total = metrics.n + len(dead)
    _analyse(report, ref, candidate, outputs, spec, cause_sample, batch_size)
    ref.close()
    report.seconds = time.perf_counter() - t0
    dead.sort(key=lambda d: d["id"])
    return CatalogDrift(report, by_slice, dead, len(dead), total, counters, runner, workers, report.seconds)


def _counters(result: Any) -> dict[str, int]:
    try:
        res = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except Exception:  # a runner without metrics support
        return {}
    out: dict[str, int] = {}
    for c in res.get("counters", []):
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(c.committed or c.attempted or 0)
    return out


def _analyse(report: DriftReport, ref: TFLiteDriftModel, candidate: str | Path, outputs: DeviceOutputs | None,
             spec: CatalogSpec, cause_sample: int, batch_size: int) -> None:  # fmt: skip
    """The likely-cause analysis of ``shoplens drift``, on a sample of the catalog, in the driver."""
    m = report.metrics
    needed = (m.agreement < CAUSE_TRIGGER_AGREEMENT or m.abs_delta_mean > CAUSE_TRIGGER_SCORE_DELTA
              or m.kl_mean > CAUSE_TRIGGER_KL or report.collapsed)  # fmt: skip
    if not needed or cause_sample <= 0 or spec.kind != "list":
        return
    from shoplens.drift.causes import likely_causes

    imgs: list[np.ndarray] = []
    ids: list[str] = []
    labels: list[int] = []
    for item in spec.items:
        if len(ids) >= cause_sample:
            break
        try:
            key, img = decode(item)
        except ValueError:
            continue
        if outputs is not None and key not in outputs.scores:
            continue
        imgs.append(img)
        ids.append(key)
        labels.append(int(item["label"]))
    if not ids:
        return
    if outputs is not None:
        cand_scores = np.stack([outputs.scores[i] for i in ids])
    else:
        cand = TFLiteDriftModel(candidate)
        pre = cand.preprocessor()
        x = np.empty((len(imgs), *pre.out_shape), pre.out_dtype)
        for i, img in enumerate(imgs):
            pre(img, x[i])
        cand_scores = to_probabilities(cand.predict(x))
        cand.close()
    sample = _ListDataset(name="sample", label_names=tuple(ref.labels), images=imgs, ids_=ids,
                          labels=np.asarray(labels, np.int64))  # fmt: skip
    base, causes = likely_causes(ref, sample, ids, cand_scores, batch_size=batch_size)
    report.cause_sample = len(ids)
    report.cause_baseline_agreement, report.cause_baseline_mad = base
    report.causes = causes


@dataclass
class _ListDataset(Dataset):
    """A small in-memory dataset of decoded images of any sizes (the cause sample)."""

    images: list[np.ndarray] = field(default_factory=list)
    ids_: list[str] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_size: int = 64) -> Iterator[Batch]:
        for s in range(0, len(self.images), batch_size):
            end = s + batch_size
            yield Batch(self.images[s:end], self.labels[s:end], self.ids_[s:end])
