"""Accuracy drift between a reference model and a candidate, with the likely cause of a mismatch.

The reference is a Keras model (through the converter, which needs TensorFlow) or a ``.tflite``
file; the candidate is a ``.tflite`` file or a *device-outputs* file (the scores a phone or a
kiosk computed for the same images, see docs/drift.md). Every model sees the images through
:class:`shoplens.preprocess.Preprocessor` with its own contract; ``.tflite`` files run in the
SDK's :class:`~shoplens.Classifier`, as on the device.

Evaluation streams in batches: what is kept per image is two class indices and a correctness
bit, so memory stays bounded at 100k+ images. When the candidate disagrees with the reference,
:func:`likely_causes` re-runs the reference with the common on-device mistakes (channel order,
normalization range, resize filter, crop mode) and names the one that reproduces the candidate;
a candidate that collapsed to a near-constant output is named as such.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shoplens._progress import progress
from shoplens.contract import ColorOrder, CropMode, Interpolation, PreprocessContract
from shoplens.data.datasets import Batch, Dataset, read_image
from shoplens.errors import DataError, DependencyError, ModelError, UsageError
from shoplens.preprocess import Preprocessor

__all__ = [
    "DEVICE_OUTPUTS_FORMAT",
    "Alternative",
    "BundleDataset",
    "DeviceOutputs",
    "DriftModel",
    "DriftReport",
    "TFLiteDriftModel",
    "alternatives",
    "likely_causes",
    "open_model",
    "run_drift",
    "to_probabilities",
]

DEVICE_OUTPUTS_FORMAT = "shoplens-device-outputs"
CAUSE_TRIGGER_AGREEMENT = 0.99  # below this, drift looks for the likely cause
CAUSE_TRIGGER_SCORE_DELTA = 0.02  # or above this mean |score delta| (int8 noise is about 0.001)
CAUSE_TRIGGER_KL = 0.02  # or above this mean KL (the int8 reference model vs its source: 0.008)
MAX_LISTED_IDS = 1000


# -- scores -----------------------------------------------------------------------------------
def to_probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows of scores as probabilities: kept when they already are, softmaxed when logits."""
    s = np.asarray(scores, np.float64)
    if s.ndim != 2:
        raise DataError(f"scores must be a 2-D (N, K) array, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise DataError("scores contain NaN or inf values")
    if s.size and s.min() >= -1e-3 and s.max() <= 1 + 1e-3 and np.allclose(s.sum(axis=1), 1.0, atol=0.05):
        clipped: np.ndarray = np.clip(s, 0.0, 1.0)
        return clipped
    z = s - s.max(axis=1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return probs


# -- models -----------------------------------------------------------------------------------
class DriftModel:
    """What drift needs from a model: its labels and contract, and scores for preprocessed input."""

    name: str
    labels: tuple[str, ...]
    contract: PreprocessContract

    def preprocessor(self, contract: PreprocessContract | None = None) -> Preprocessor:
        raise NotImplementedError  # pragma: no cover

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities (N, K) for a batch made by :meth:`preprocessor`."""
        raise NotImplementedError  # pragma: no cover

    def close(self) -> None:
        pass


class TFLiteDriftModel(DriftModel):
    """A ``.tflite`` file in the SDK Classifier (1 thread): the device's own code path."""

    def __init__(self, path: str | Path, *, num_threads: int = 1) -> None:
        from shoplens.classifier import Classifier

        self.path = Path(path)
        self.name = self.path.name
        self._clf = Classifier.create_from_model_path(self.path, num_threads=num_threads)
        self.labels = tuple(self._clf.labels)
        self.contract = self._clf.contract

    def preprocessor(self, contract: PreprocessContract | None = None) -> Preprocessor:
        base = self._clf.preprocessor
        if contract is None:
            return base
        q = base.quantization
        return Preprocessor(contract, input_order=base.input_order, quantization=q,
                            dtype=None if q else base.out_dtype)  # fmt: skip

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return self._clf.predict_preprocessed(inputs)

    def close(self) -> None:
        self._clf.close()


def open_model(
    path: str | Path,
    *,
    contract_path: Path | None = None,
    labels_path: Path | None = None,
    unsafe_load: bool = False,
) -> DriftModel:
    """A ``.tflite`` file in the SDK, or a Keras model (any format the converter reads)."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model {p} does not exist")
    if p.suffix.lower() == ".tflite":
        if contract_path is not None or labels_path is not None:
            raise UsageError("--contract and --labels apply to a Keras reference; a .tflite carries its own")
        return TFLiteDriftModel(p)
    try:
        from shoplens_convert.drift_model import KerasDriftModel
    except DependencyError as exc:
        raise DependencyError(f"a Keras reference needs TensorFlow: {exc.message}") from None
    model: DriftModel = KerasDriftModel(p, contract_path=contract_path, labels_path=labels_path,
                                        unsafe_load=unsafe_load)  # fmt: skip
    return model


# -- device outputs ---------------------------------------------------------------------------
@dataclass
class DeviceOutputs:
    """Scores a device computed, keyed by image id (bundle frame path or dataset id)."""

    path: Path
    scores: dict[str, np.ndarray]
    labels: tuple[str, ...] | None = None
    device: str = ""

    @property
    def num_classes(self) -> int:
        return len(next(iter(self.scores.values())))

    @classmethod
    def load(cls, path: str | Path) -> DeviceOutputs:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"device outputs file {p} does not exist")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read device outputs {p}: {exc}") from None
        if p.suffix.lower() == ".csv":
            ids, rows, labels, device = _parse_outputs_csv(p, text)
        else:
            ids, rows, labels, device = _parse_outputs_json(p, text)
        if not ids:
            raise DataError(f"device outputs {p} hold no frames")
        widths = {len(r) for r in rows}
        if len(widths) != 1:
            raise DataError(f"device outputs {p}: frames have different numbers of scores {sorted(widths)}")
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"device outputs {p}: frame {dup!r} appears more than once")
        try:
            arr = np.asarray(rows, np.float64)
        except (TypeError, ValueError):
            raise DataError(f"device outputs {p}: scores must be numbers") from None
        if labels is not None and len(labels) != arr.shape[1]:
            raise DataError(f"device outputs {p}: {len(labels)} labels but {arr.shape[1]} scores per frame")
        probs = to_probabilities(arr)
        return cls(p, dict(zip(ids, probs, strict=True)), labels, device)

    def check_against(self, labels: Sequence[str], ids: Sequence[str], what: str) -> None:
        """Same classes and exactly the frames of ``what``; DataError (exit 2) otherwise."""
        if self.num_classes != len(labels):
            raise DataError(
                f"device outputs {self.path} have {self.num_classes} scores per frame, "
                f"the reference model {len(labels)} classes"
            )
        if self.labels is not None and tuple(self.labels) != tuple(labels):
            diff = next(i for i, (a, b) in enumerate(zip(self.labels, labels, strict=True)) if a != b)
            raise DataError(
                f"device outputs {self.path} label set differs from the reference's "
                f"(class {diff}: {self.labels[diff]!r} vs {labels[diff]!r})"
            )
        want, have = set(ids), set(self.scores)
        if len(have) != len(want) or want != have:
            missing = sorted(want - have)
            extra = sorted(have - want)
            detail = []
            if missing:
                detail.append(f"missing {len(missing)} (e.g. {missing[0]})")
            if extra:
                detail.append(f"{len(extra)} not in {what} (e.g. {extra[0]})")
            raise DataError(
                f"device outputs {self.path} hold {len(have)} frames, {what} has {len(want)}: "
                + "; ".join(detail)
            )


def _parse_outputs_json(
    p: Path, text: str
) -> tuple[list[str], list[list[float]], tuple[str, ...] | None, str]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"device outputs {p} are not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != DEVICE_OUTPUTS_FORMAT:
        raise DataError(f'{p} is not a device-outputs file ("format": "{DEVICE_OUTPUTS_FORMAT}" missing)')
    if doc.get("version", 1) != 1:
        raise DataError(f"{p}: device-outputs version {doc.get('version')!r}, this ShopLens reads 1")
    outputs = doc.get("outputs")
    if not isinstance(outputs, list):
        raise DataError(f'{p}: "outputs" must be a list of {{"id", "scores"}} objects')
    ids: list[str] = []
    rows: list[list[float]] = []
    for i, o in enumerate(outputs):
        if not isinstance(o, dict) or "id" not in o or not isinstance(o.get("scores"), list):
            raise DataError(f'{p}: output {i} needs "id" and a "scores" list')
        ids.append(str(o["id"]))
        rows.append(o["scores"])
    labels = doc.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise DataError(f'{p}: "labels" must be a list of strings')
    return ids, rows, tuple(labels) if labels is not None else None, str(doc.get("device", ""))


def _parse_outputs_csv(
    p: Path, text: str
) -> tuple[list[str], list[list[float]], tuple[str, ...] | None, str]:
    try:
        reader = list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise DataError(f"cannot parse device outputs {p}: {exc}") from None
    if not reader or not reader[0] or reader[0][0].strip().lower() not in ("id", "frame"):
        raise DataError(f"device outputs {p}: the CSV header must start with 'id' then one column per class")
    header = [h.strip() for h in reader[0][1:]]
    positional = all(h == f"score_{i}" or h == str(i) for i, h in enumerate(header))
    ids: list[str] = []
    rows: list[list[float]] = []
    for n, r in enumerate(reader[1:], start=2):
        if not r or not "".join(r).strip():
            continue
        if len(r) != len(header) + 1:
            raise DataError(
                f"device outputs {p} line {n}: {len(r) - 1} scores, the header names {len(header)}"
            )
        try:
            rows.append([float(v) for v in r[1:]])
        except ValueError:
            raise DataError(f"device outputs {p} line {n}: scores must be numbers") from None
        ids.append(r[0].strip())
    return ids, rows, None if positional else tuple(header), ""


# -- bundle frames as a dataset ---------------------------------------------------------------
@dataclass
class BundleDataset(Dataset):
    """The golden frames of a device bundle, read lazily; ids are the frame paths."""

    root: Path = Path(".")
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(cls, bundle_dir: str | Path) -> BundleDataset:
        from shoplens.bundle import verify_bundle

        root = Path(bundle_dir)
        manifest = verify_bundle(root)
        try:
            expected = json.loads((root / "expected.json").read_text(encoding="utf-8"))
            rows = list(expected["frames"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"bundle {root}: expected.json is unreadable: {exc}") from None
        return cls(name=f"bundle:{root}", label_names=tuple(manifest["labels"]), root=root, rows=rows)

    def __len__(self) -> int:
        return len(self.rows)

    def ids(self) -> list[str]:
        return [str(r["frame"]) for r in self.rows]

    def batches(self, batch_size: int = 64) -> Iterator[Batch]:
        self._check_batch_size(batch_size)
        for s in range(0, len(self.rows), batch_size):
            part = self.rows[s : s + batch_size]
            imgs = []
            for r in part:
                img = read_image(self.root / r["frame"])
                if img is None:
                    raise DataError(f"bundle {self.root}: frame {r['frame']} cannot be read")
                imgs.append(img)
            yield Batch(
                imgs, np.asarray([int(r["label"]) for r in part], np.int64), [r["frame"] for r in part]
            )


# -- the report -------------------------------------------------------------------------------
def _prf(confusion: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(confusion).astype(np.float64)
    pred = confusion.sum(axis=0).astype(np.float64)
    true = confusion.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred > 0, tp / pred, 0.0)
        recall = np.where(true > 0, tp / true, np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1}


def paired_bootstrap_ci(
    ref_ok: np.ndarray, cand_ok: np.ndarray, *, rounds: int = 4000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile CI (points) of the paired top-1 drop, resampling images with replacement.

    The paired difference per image takes only the values -1, 0, +1, so resampling N images is a
    multinomial draw over those three counts: exact, and O(rounds) rather than O(rounds * N).
    """
    d = ref_ok.astype(np.int8) - cand_ok.astype(np.int8)
    n = len(d)
    if n == 0:
        return (math.nan, math.nan)
    counts = np.array([(d == -1).sum(), (d == 0).sum(), (d == 1).sum()], np.float64)
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=rounds)
    drops = 100.0 * (draws[:, 2] - draws[:, 0]) / n
    lo, hi = np.percentile(drops, [2.5, 97.5])
    return float(lo), float(hi)


@dataclass
class Alternative:
    """A contract a buggy pipeline might use instead of the reference's, and what to call it."""

    key: str
    contract: PreprocessContract
    finding: str  # "the device probably feeds BGR"
    description: str  # "BGR input"


@dataclass
class CauseResult:
    alternative: Alternative
    agreement: float
    mean_abs_delta: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "alternative": self.alternative.key,
            "description": self.alternative.description,
            "agreement": round(self.agreement, 6),
            "mean_abs_score_delta": round(self.mean_abs_delta, 6),
        }


@dataclass
class DriftReport:
    reference: str
    candidate: str
    data: str
    labels: tuple[str, ...]
    n: int
    ref_confusion: np.ndarray
    cand_confusion: np.ndarray
    ref_top5: float
    cand_top5: float
    agreement: float
    kl_mean: float
    abs_delta_mean: float
    abs_delta_max: float
    drop_ci95: tuple[float, float]
    disagreeing_ids: list[str]
    disagreeing_total: int
    ref_top_share: float
    cand_top_share: float
    cand_top_class: int
    ref_score_spread: float
    cand_score_spread: float
    contract_differences: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    causes: list[CauseResult] = field(default_factory=list)
    cause_sample: int = 0
    cause_baseline_agreement: float = 1.0  # the reference's own contract on the cause sample
    cause_baseline_mad: float = 0.0
    per_frame: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    gate: dict[str, Any] = field(default_factory=dict)

    # -- derived metrics ----------------------------------------------------------------------
    @property
    def ref_top1(self) -> float:
        return float(np.trace(self.ref_confusion) / max(self.n, 1))

    @property
    def cand_top1(self) -> float:
        return float(np.trace(self.cand_confusion) / max(self.n, 1))

    @property
    def drop(self) -> float:
        """Top-1 drop in points, reference minus candidate."""
        return 100.0 * (self.ref_top1 - self.cand_top1)

    def per_class(self) -> list[dict[str, Any]]:
        """Per class: accuracies, delta (points, positive = candidate worse), P/R/F1; worst first."""
        rp, cp = _prf(self.ref_confusion), _prf(self.cand_confusion)
        rows = []
        for i, name in enumerate(self.labels):
            support = int(self.ref_confusion[i].sum())
            ra = rp["recall"][i]
            ca = cp["recall"][i]
            rows.append({
                "index": i,
                "label": name,
                "support": support,
                "reference_accuracy": None if support == 0 else round(float(ra), 6),
                "candidate_accuracy": None if support == 0 else round(float(ca), 6),
                "delta_pts": 0.0 if support == 0 else round(100.0 * float(ra - ca), 4),
                "reference": {k: round(float(np.nan_to_num(v[i])), 6) for k, v in rp.items()},
                "candidate": {k: round(float(np.nan_to_num(v[i])), 6) for k, v in cp.items()},
            })  # fmt: skip
        return sorted(rows, key=lambda r: (-r["delta_pts"], r["index"]))

    @property
    def max_class_drop(self) -> tuple[float, str]:
        worst = self.per_class()[0]
        return float(worst["delta_pts"]), str(worst["label"])

    @property
    def collapsed(self) -> bool:
        """The candidate answers (nearly) the same whatever the image."""
        if self.n < 10:
            return False
        flat = self.cand_score_spread < 0.1 * max(self.ref_score_spread, 1e-9)
        one_class = self.cand_top_share >= 0.8 and self.ref_top_share < 0.5
        return flat or one_class

    @property
    def best_cause(self) -> CauseResult | None:
        """The alternative contract that reproduces the candidate, if one does convincingly."""
        if not self.causes:
            return None
        best = self.causes[0]
        base_agree = self.cause_baseline_agreement
        gap = 1.0 - base_agree
        by_agreement = best.agreement >= 0.97 and best.agreement >= base_agree + gap / 2
        base_mad = self.cause_baseline_mad
        by_scores = base_mad > 0 and best.mean_abs_delta <= 0.25 * base_mad and best.agreement >= base_agree
        if self.collapsed:
            # a wrong range can also make the reference near-constant; only a match of the scores
            # themselves (not just of the argmax) then tells a preprocessing bug from a broken model
            return best if by_scores else None
        return best if (by_agreement or by_scores) else None

    def likely_cause(self) -> str:
        best = self.best_cause
        if best is not None:
            return (
                f"the candidate matches the reference with {best.alternative.description} "
                f"(agreement {100 * best.agreement:.1f} %, mean |score delta| {best.mean_abs_delta:.4f}): "
                f"{best.alternative.finding}"
            )
        if self.collapsed:
            name = self.labels[self.cand_top_class]
            return (
                f"the candidate collapsed to a near-constant output (it predicts {name!r} for "
                f"{100 * self.cand_top_share:.1f} % of images; its score spread is "
                f"{100 * self.cand_score_spread / max(self.ref_score_spread, 1e-9):.1f} % of the "
                "reference's): "
                "quantization broke the model; check the calibration images and that they went through "
                "the model's preprocessing"
            )
        if self.contract_differences:
            diffs = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in self.contract_differences.items())
            return f"the two models declare different preprocessing contracts ({diffs})"
        if self.causes:
            c = self.causes[0]
            return (
                "no common preprocessing mistake reproduces the candidate (closest: "
                f"{c.alternative.description}, agreement {100 * c.agreement:.1f} %); the difference is "
                "probably numeric: quantization error, or a different runtime or op implementation"
            )
        if (
            self.agreement >= CAUSE_TRIGGER_AGREEMENT
            and self.abs_delta_mean <= CAUSE_TRIGGER_SCORE_DELTA
            and self.kl_mean <= CAUSE_TRIGGER_KL
        ):
            return "none needed: the candidate agrees with the reference"
        return "not analysed"

    def check_gate(
        self,
        *,
        max_drop: float | None = None,
        min_agreement: float | None = None,
        max_class_drop: float | None = None,
        score_tolerance: float | None = None,
    ) -> list[str]:
        """The failed limits, each saying by how much; empty when the gate passes."""
        failures = []
        if max_drop is not None and self.drop > max_drop:
            failures.append(
                f"top-1 drop {self.drop:.2f} pts > --max-drop {max_drop:g} (by {self.drop - max_drop:.2f}; "
                f"95 % CI {self.drop_ci95[0]:.2f}..{self.drop_ci95[1]:.2f})"
            )
        if min_agreement is not None and 100 * self.agreement < min_agreement:
            failures.append(
                f"agreement {100 * self.agreement:.2f} % < --min-agreement {min_agreement:g} % "
                f"(by {min_agreement - 100 * self.agreement:.2f})"
            )
        if max_class_drop is not None:
            d, name = self.max_class_drop
            if d > max_class_drop:
                failures.append(
                    f"class {name!r} drops {d:.2f} pts > --max-class-drop {max_class_drop:g} "
                    f"(by {d - max_class_drop:.2f})"
                )
        if score_tolerance is not None:
            bad = [f for f in self.per_frame if not f["ok"]]
            if bad:
                failures.append(
                    f"{len(bad)} of {len(self.per_frame)} frames differ (top-1 changed or a score off "
                    "by more "
                    f"than {score_tolerance:g}; worst {max(f['max_abs_delta'] for f in bad):.4f} "
                    f"on {max(bad, key=lambda f: f['max_abs_delta'])['id']})"
                )
        self.gate = {
            "max_drop_pts": max_drop,
            "min_agreement_pct": min_agreement,
            "max_class_drop_pts": max_class_drop,
            "score_tolerance": score_tolerance,
            "passed": not failures,
            "failures": failures,
        }
        return failures

    def to_dict(self) -> dict[str, Any]:
        best = self.best_cause
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "data": self.data,
            "n": self.n,
            "labels": list(self.labels),
            "reference_top1": round(self.ref_top1, 6),
            "candidate_top1": round(self.cand_top1, 6),
            "reference_top5": round(self.ref_top5, 6),
            "candidate_top5": round(self.cand_top5, 6),
            "drop_pts": round(self.drop, 4),
            "drop_ci95_pts": [round(self.drop_ci95[0], 4), round(self.drop_ci95[1], 4)],
            "agreement": round(self.agreement, 6),
            "kl_mean": round(self.kl_mean, 6),
            "abs_score_delta_mean": round(self.abs_delta_mean, 6),
            "abs_score_delta_max": round(self.abs_delta_max, 6),
            "per_class": self.per_class(),
            "reference_confusion": self.ref_confusion.tolist(),
            "candidate_confusion": self.cand_confusion.tolist(),
            "disagreeing_ids": self.disagreeing_ids,
            "disagreeing_total": self.disagreeing_total,
            "collapsed": self.collapsed,
            "candidate_top_class_share": round(self.cand_top_share, 6),
            "contract_differences": {k: [str(a), str(b)] for k, (a, b) in self.contract_differences.items()},
            "cause_analysis": {
                "sample": self.cause_sample,
                "baseline_agreement": round(self.cause_baseline_agreement, 6),
                "baseline_mean_abs_score_delta": round(self.cause_baseline_mad, 6),
                "alternatives": [c.to_dict() for c in self.causes],
                "best": best.alternative.key if best else None,
            },
            "likely_cause": self.likely_cause(),
            "per_frame": self.per_frame,
            "gate": self.gate,
            "seconds": round(self.seconds, 2),
        }


# -- the run ----------------------------------------------------------------------------------
CandidateScores = Callable[[Batch], np.ndarray]


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    eps = 1e-7
    p = np.clip(p, eps, 1.0)
    q = np.clip(q, eps, 1.0)
    kl: np.ndarray = np.sum(p * (np.log(p) - np.log(q)), axis=1)
    return kl


def _scores_for(model: DriftModel, pre: Preprocessor, batch: Batch, buf: np.ndarray) -> np.ndarray:
    m = len(batch)
    for i, img in enumerate(batch.images):
        pre(img, buf[i])
    s = to_probabilities(model.predict(buf[:m]))
    if s.shape[0] != m:
        raise DataError(f"{model.name} returned {s.shape[0]} score rows for a batch of {m}")
    return s


def _topk_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> int:
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return int(np.any(top == labels[:, None], axis=1).sum())


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
            rs = _scores_for(reference, ref_pre, batch, ref_buf)
            if device:
                cs = np.stack([candidate.scores[i] for i in batch.ids])  # type: ignore[union-attr]
            else:
                cs = _scores_for(candidate, cand_pre, batch, cand_buf)  # type: ignore[arg-type]
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
            top5[0] += _topk_hits(rs, y, 5)
            top5[1] += _topk_hits(cs, y, 5)
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
    for interp in Interpolation:
        if interp is not c.interpolation:
            out.append(Alternative(
                f"interpolation={interp.value}", c.replace(interpolation=interp),
                f"the device probably resizes with {interp.value} interpolation "
                f"(the model expects {c.interpolation.value})",
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
                s = _scores_for(reference, pre, part, buf)
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
