"""The converter's result object and its output directory rules (what exists, what is protected)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shoplens._atomic import atomic_write_many, check_target, ensure_output_dir
from shoplens.errors import DriftGateFailed, OutputExistsError, UsageError
from shoplens_convert.report import render_markdown

__all__ = ["OUTPUT_FILES", "ConversionResult", "check_output_dir"]

OUTPUT_FILES = ("model.tflite", "labels.txt", "report.json", "report.md", "embedding.tflite")


@dataclass
class ConversionResult:
    """The converted model (absent when the guard rejected it), its labels and the report."""

    model: bytes | None
    labels: tuple[str, ...]
    report: dict[str, Any]
    extra: dict[str, bytes] = field(default_factory=dict)  # e.g. embedding.tflite

    @property
    def accepted(self) -> bool:
        return self.model is not None

    def save(self, out_dir: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
        """Write model.tflite, labels.txt, report.json and report.md (atomically, each).

        A rejected conversion writes only the two reports; an accepted one writes the model last
        but one, so a reader never finds a model without its labels.
        """
        out = check_output_dir(out_dir, overwrite=overwrite)
        files: dict[str, bytes] = {}
        if self.model is not None:
            files["labels.txt"] = ("\n".join(self.labels) + "\n").encode("utf-8")
            files.update(self.extra)
            files["model.tflite"] = self.model
            for name in files:
                check_target(out / name, overwrite)
        text = json.dumps(self.report, indent=2, sort_keys=False, default=_json_default) + "\n"
        files["report.json"] = text.encode("utf-8")
        files["report.md"] = render_markdown(self.report).encode("utf-8")
        # all or nothing: a full disk leaves the previous model, labels and reports as they were
        paths = atomic_write_many(out, files, overwrite=True)
        keys = {"labels.txt": "labels", "model.tflite": "model", "report.json": "report_json",
                "report.md": "report_md"}  # fmt: skip
        written = {keys.get(k, k): v for k, v in paths.items()}
        return written

    def raise_for_status(self) -> None:
        if not self.accepted:
            raise DriftGateFailed(self.report["status"]["message"])


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def check_output_dir(out_dir: str | Path, *, overwrite: bool, inputs: Sequence[str | Path] = ()) -> Path:
    """Create ``out_dir``; refuse if it is a file, holds outputs (unless overwrite) or an input."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a directory")
    protected = {Path(p).resolve() for p in inputs if Path(p).exists()}
    for f in OUTPUT_FILES:
        if (Path(out_dir) / f).resolve() in protected:
            raise UsageError(
                f"--out {out_dir} would overwrite the input {Path(out_dir) / f}; choose another directory"
            )
    out = ensure_output_dir(out_dir)
    if not overwrite:
        existing = [f for f in OUTPUT_FILES if (out / f).exists()]
        if existing:
            raise OutputExistsError(
                f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them"
            )
    return out
