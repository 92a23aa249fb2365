"""The converter's result object and its output directory rules (what exists, what is protected)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.errors import ConversionError, DataError, DriftGateFailed, OutputExistsError, UsageError
from shoplens.internal.atomic import atomic_write_many, check_target, ensure_output_dir
from shoplens_convert.report import render_markdown

__all__ = ["OUTPUT_FILES", "ConversionResult", "SavedConversion", "check_output_dir"]

OUTPUT_FILES = (
    "model.tflite", "labels.txt", "report.json", "report.md", "embedding.tflite", "model_edgetpu.tflite",
    "model_edgetpu.log",
)  # fmt: skip


@dataclass(frozen=True)
class SavedConversion:
    """What :meth:`ConversionResult.save` wrote, and the complete report it wrote."""

    paths: dict[str, Path]
    report: dict[str, Any]
    messages: tuple[str, ...] = ()  # one line each: the Edge TPU compiler's outcome, the bundle


@dataclass(frozen=True)
class ConversionResult:
    """The converted model (absent when the guard rejected it), its labels and the report.

    Example:
      >>> result = convert("model.keras", ConvertOptions(...))   # doctest: +SKIP
      >>> saved = result.save("out/int8", bundle=True)           # doctest: +SKIP
      >>> result.raise_for_status()                              # doctest: +SKIP
    """

    model: bytes | None
    labels: tuple[str, ...]
    report: dict[str, Any]
    extra: dict[str, bytes] = field(default_factory=dict)  # e.g. embedding.tflite
    target: str = "cpu"

    @property
    def accepted(self) -> bool:
        return self.model is not None

    def save(self, out_dir: str | Path, *, overwrite: bool = False, bundle: bool = False) -> SavedConversion:
        """Write the outputs, all or nothing, with the report written once and complete.

        An accepted model is written with its labels (and ``embedding.tflite``); for the Edge TPU
        target ``edgetpu_compiler`` runs first when it is installed (``model_edgetpu.tflite``);
        with ``bundle`` a device bundle goes to ``OUT/bundle``. A rejected conversion writes only
        the two reports. A full disk or a failure leaves the previous outputs as they were.

        Raises:
          OutputExistsError: outputs exist and ``overwrite`` is False.
          ConversionError: the Edge TPU compiler failed (the reports say how; no model is lost).
        """
        out = check_output_dir(out_dir, overwrite=overwrite)
        report = copy.deepcopy(self.report)
        files: dict[str, bytes] = {}
        messages: list[str] = []
        failure: ConversionError | None = None
        if bundle and self.accepted and (out / "bundle").exists() and not overwrite:
            raise OutputExistsError(f"{out / 'bundle'} already exists; pass --overwrite to replace it")
        if self.model is not None:
            files["labels.txt"] = ("\n".join(self.labels) + "\n").encode("utf-8")
            files.update(self.extra)
            files["model.tflite"] = self.model
            for name in files:
                check_target(out / name, overwrite)
        if self.model is not None and (self.target == "edgetpu" or bundle):
            stage = Path(tempfile.mkdtemp(prefix=".convert.", dir=out))
            try:
                try:
                    (stage / "model.tflite").write_bytes(self.model)
                except OSError as exc:
                    raise DataError(
                        f"cannot write in {out}: {exc.strerror or exc}; the previous outputs are unchanged"
                    ) from None
                if self.target == "edgetpu":
                    block, msg, failure = _compile(stage, out)
                    report.setdefault("edgetpu", {})["compiler"] = block
                    messages.append(msg)
                    for name in ("model_edgetpu.tflite", "model_edgetpu.log"):
                        if (stage / name).is_file():
                            files[name] = (stage / name).read_bytes()
                if bundle:
                    from shoplens.bundle_writer import write_bundle

                    manifest = write_bundle(stage / "model.tflite", out / "bundle", overwrite=overwrite)
                    report["bundle"] = {"path": str(out / "bundle"), "frames": manifest["frames"]}
                    messages.append(f"bundle with {manifest['frames']} golden frames in {out / 'bundle'}")
            finally:
                shutil.rmtree(stage, ignore_errors=True)
        text = json.dumps(report, indent=2, sort_keys=False, default=_json_default) + "\n"
        files["report.json"] = text.encode("utf-8")
        files["report.md"] = render_markdown(report).encode("utf-8")
        # all or nothing: a full disk leaves the previous model, labels and reports as they were
        paths = atomic_write_many(out, files, overwrite=True)
        keys = {"labels.txt": "labels", "model.tflite": "model", "report.json": "report_json",
                "report.md": "report_md"}  # fmt: skip
        saved = SavedConversion({keys.get(k, k): v for k, v in paths.items()}, report, tuple(messages))
        if failure is not None:
            raise failure
        return saved

    def raise_for_status(self) -> None:
        """DriftGateFailed (exit 1) when the accuracy guard rejected the model."""
        if not self.accepted:
            raise DriftGateFailed(self.report["status"]["message"])


def _compile(stage: Path, out: Path) -> tuple[dict[str, Any], str, ConversionError | None]:
    """Run the Edge TPU compiler on the staged model, if it is installed: (report block, message,
    the failure to raise once the reports are written)."""
    from shoplens.edgetpu import compile_for_edgetpu
    from shoplens.errors import DependencyError

    try:
        res = compile_for_edgetpu(stage / "model.tflite", stage)
    except DependencyError as exc:
        msg = f"Edge TPU compiler not run: {exc.message}; kept the CPU int8 model and the pre-flight report"
        return {"status": "not installed", "message": exc.message}, msg, None
    except ConversionError as exc:
        return {"status": "failed", "message": exc.message}, exc.message, exc
    block = {"status": "compiled", **res.to_dict(), "output": str(out / "model_edgetpu.tflite")}
    msg = (
        f"compiled {out / 'model_edgetpu.tflite'} with edgetpu_compiler {res.compiler_version}: "
        f"{res.ops_on_tpu} ops on the Edge TPU, {res.ops_on_cpu} on the CPU"
    )
    return block, msg, None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def check_output_dir(
    out_dir: str | Path, *, overwrite: bool, inputs: Sequence[str | Path] = (), create: bool = True
) -> Path:
    """Refuse ``out_dir`` if it is a file, holds outputs (unless overwrite) or an input; create it
    when ``create`` (the early check before a conversion creates nothing: a failure leaves no
    empty folder behind)."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a directory")
    protected = {Path(p).resolve() for p in inputs if Path(p).exists()}
    for f in OUTPUT_FILES:
        if (Path(out_dir) / f).resolve() in protected:
            raise UsageError(
                f"--out {out_dir} would overwrite the input {Path(out_dir) / f}; choose another directory"
            )
    out = Path(out_dir)
    if create:
        ensure_output_dir(out)
    elif not out.exists():
        parent = next((p for p in out.parents if p.exists()), Path("."))
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise DataError(f"cannot create output directory {out}: {parent} is not writable")
        return out
    if not overwrite:
        existing = [f for f in OUTPUT_FILES if (out / f).exists()]
        if existing:
            raise OutputExistsError(
                f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them"
            )
    return out
