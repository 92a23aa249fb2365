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
from shoplens.errors import DataError

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
