"""What drift reads besides models: device-outputs files, and a bundle's golden frames."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.data.datasets import Batch, Dataset, read_image
from shoplens.drift.models import to_probabilities
from shoplens.errors import DataError, UsageError

DEVICE_OUTPUTS_FORMAT = "shoplens-device-outputs"


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
    budgets: dict[str, Any] = field(default_factory=dict)  # from the verified manifest

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
        raw = manifest.get("budgets")
        budgets: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
        return cls(name=f"bundle:{root}", label_names=tuple(manifest["labels"]), root=root, rows=rows,
                   budgets=budgets)  # fmt: skip

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


# -- what a drift run compares ----------------------------------------------------------------
OUTPUT_SUFFIXES = (".json", ".csv")


@dataclass(frozen=True)
class DriftPlan:
    """The two sides of a drift run and the images, resolved from the command's arguments."""

    reference: Path
    candidate: Path  # a .tflite, or a device-outputs file
    dataset: Dataset | None  # the bundle's frames; None: open ``data`` later
    data: str | None
    score_tolerance: float | None  # bundles: per-frame score tolerance from the manifest

    @property
    def candidate_is_outputs(self) -> bool:
        return self.candidate.suffix.lower() in OUTPUT_SUFFIXES


def plan_drift(
    reference: Path | None,
    candidate: Path | None,
    data: str | None,
    *,
    bundle: Path | None = None,
    device_outputs: Path | None = None,
    outputs: Sequence[Path | None] = (),
    overwrite: bool = False,
) -> DriftPlan:
    """Check the arguments of a drift run before any work, and resolve bundle mode.

    Either REFERENCE, CANDIDATE and ``data``, or ``bundle`` and ``device_outputs``. The report
    files in ``outputs`` must be neither an input nor each other, and may exist only with
    ``overwrite``: so a run that will fail to write fails before it computes anything.

    Raises:
      UsageError: missing or contradicting arguments, an output that is an input.
      OutputExistsError: an output exists and ``overwrite`` is False.
    """
    from shoplens.internal.atomic import check_target

    if bundle is not None:
        if device_outputs is None:
            raise UsageError("--bundle needs --device-outputs FILE (the scores your device computed)")
        if reference is not None or candidate is not None or data is not None:
            raise UsageError("with --bundle, give no REFERENCE, CANDIDATE or --data: the bundle holds them")
        ds = BundleDataset.open(bundle)
        plan = DriftPlan(bundle / "model.tflite", device_outputs, ds, None,
                         float(ds.budgets.get("score_tolerance", 0.02)))  # fmt: skip
        inputs = [p for p in bundle.rglob("*") if p.is_file()] + [device_outputs]
    else:
        if device_outputs is not None:
            raise UsageError("--device-outputs goes with --bundle; otherwise pass the file as CANDIDATE")
        if reference is None or candidate is None:
            raise UsageError("give REFERENCE and CANDIDATE (or --bundle DIR --device-outputs FILE)")
        if data is None:
            raise UsageError("--data is required: the images both models are compared on")
        plan = DriftPlan(reference, candidate, None, data, None)
        inputs = [reference, candidate]
    suffix = plan.candidate.suffix.lower()
    if suffix not in (*OUTPUT_SUFFIXES, ".tflite") and plan.candidate.exists():
        raise UsageError(f"candidate {plan.candidate} must be a .tflite or a device-outputs .json/.csv file")
    given = [p for p in outputs if p is not None]
    resolved = [p.resolve() for p in given]
    protected = {p.resolve() for p in inputs if p.exists()}
    for p, r in zip(given, resolved, strict=True):
        if r in protected or any(r == q.resolve() or q.resolve() in r.parents for q in inputs if q.is_dir()):
            raise UsageError(f"{p} is one of the inputs; write the report elsewhere")
        if resolved.count(r) > 1:
            raise UsageError(f"{p} is given for two reports; give each its own file")
        if not p.parent.is_dir():
            raise UsageError(f"directory {p.parent} does not exist; create it first")
        check_target(p, overwrite)
    return plan
