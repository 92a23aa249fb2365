"""``--target edgetpu``: a static batch-1 model, the pre-flight in the report, and the compiler.

The converter writes batch-flexible models (shape signature ``[-1, H, W, C]``); the Edge TPU needs
static shapes, so every ``-1`` is pinned to the concrete size the converter already traced (1 for
the batch; the converter also traces with a batch of 1, see ``quantize(static_batch=True)``, so
shape arithmetic folds away). The pre-flight (:mod:`shoplens.edgetpu`) then predicts the mapping;
:meth:`ConversionResult.save` runs ``edgetpu_compiler`` when it is installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shoplens.edgetpu import preflight
from shoplens_convert.flatbuffer import pack_model, parse_model

__all__ = ["make_static", "preflight_block"]


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
