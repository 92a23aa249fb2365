"""``--target edgetpu``: a static batch-1 model, the pre-flight in the report, and the compiler.

The converter writes batch-flexible models (shape signature ``[-1, H, W, C]``); the Edge TPU needs
static shapes, so every ``-1`` is pinned to the concrete size the converter already traced (1 for
the batch). The pre-flight (:mod:`shoplens.edgetpu`) then predicts the mapping, and, when
``edgetpu_compiler`` is installed, it compiles ``model_edgetpu.tflite`` next to the CPU model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from shoplens._atomic import atomic_write_text
from shoplens.edgetpu import compile_for_edgetpu, preflight
from shoplens.errors import ConversionError, DependencyError
from shoplens_convert.flatbuffer import pack_model, parse_model

__all__ = ["compile_step", "make_static", "preflight_block"]


def make_static(tflite: bytes) -> bytes:
    """The same model with every dynamic dimension (-1 in a shape signature) pinned to its size."""
    model = parse_model(tflite)
    changed = False
    for sg in model.subgraphs or []:
        for t in sg.tensors or []:
            sig = t.shapeSignature
            if sig is None or not len(sig):
                continue
            if np.any(np.asarray(sig) < 0) and t.shape is not None and np.all(np.asarray(t.shape) > 0):
                t.shapeSignature = None
                changed = True
    return pack_model(model, len(tflite)) if changed else tflite


def preflight_block(model: bytes) -> dict[str, Any]:
    return preflight(model).to_dict()


def compile_step(out_dir: Path, report: dict[str, Any], *, timeout_s: float = 180.0) -> str:
    """Compile ``out_dir/model.tflite`` if the compiler is installed; record it in the report.

    Returns a one-line message. A missing compiler is not an error (the CPU model and the
    pre-flight stand); a compiler that fails or hangs raises ConversionError after the report
    is updated.
    """
    from shoplens_convert.report import render_markdown

    block = report.setdefault("edgetpu", {})
    failure: ConversionError | None = None
    try:
        res = compile_for_edgetpu(out_dir / "model.tflite", out_dir, timeout_s=timeout_s)
        block["compiler"] = {"status": "compiled", **res.to_dict()}
        msg = (
            f"compiled {res.output} with edgetpu_compiler {res.compiler_version}: "
            f"{res.ops_on_tpu} ops on the Edge TPU, {res.ops_on_cpu} on the CPU"
        )
    except DependencyError as exc:
        block["compiler"] = {"status": "not installed", "message": exc.message}
        msg = f"Edge TPU compiler not run: {exc.message}; kept the CPU int8 model and the pre-flight report"
    except ConversionError as exc:
        block["compiler"] = {"status": "failed", "message": exc.message}
        msg = exc.message
        failure = exc
    atomic_write_text(
        out_dir / "report.json", json.dumps(report, indent=2, default=str) + "\n", overwrite=True
    )
    atomic_write_text(out_dir / "report.md", render_markdown(report), overwrite=True)
    if failure is not None:
        raise failure
    return msg
