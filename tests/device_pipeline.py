"""An on-device pipeline written the way a mobile team writes one, with the classic bugs as knobs.

Deliberately independent of ``shoplens.preprocess``: plain OpenCV and numpy calls in the order a
Kotlin or Swift port would make them, and a LiteRT interpreter driven directly. With every knob
at its default it must match ShopLens (the tests check that first), so a drift it causes is the
bug's, not the simulator's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def device_scores(
    model_path: Path,
    frames: Iterable[tuple[str, np.ndarray]],
    *,
    size: int,
    value_range: tuple[float, float] = (0.0, 1.0),
    feed_bgr: bool = False,
    interpolation: str = "area",
    crop: str = "center",
) -> dict[str, list[float]]:
    """Scores per frame id for BGR frames, as the device computes them."""
    it = Interpreter(model_path=str(model_path), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    in_scale, in_zp = inp["quantization"]
    out_scale, out_zp = out["quantization"]
    lo, hi = value_range
    result: dict[str, list[float]] = {}
    for fid, bgr in frames:
        img = bgr if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        h, w = img.shape[:2]
        if crop == "center":
            side = min(h, w)
            y0, x0 = (h - side) // 2, (w - side) // 2
            img = img[y0 : y0 + side, x0 : x0 + side]
        img = cv2.resize(img, (size, size), interpolation=INTERP[interpolation])
        if not feed_bgr:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        x = img.astype(np.float32) / 255.0 * (hi - lo) + lo
        if in_scale:
            x = np.clip(np.rint(x / in_scale + in_zp), 0, 255).astype(inp["dtype"])
        it.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
        it.invoke()
        raw = it.get_tensor(out["index"])[0].astype(np.float64)
        scores = (raw - out_zp) * out_scale if out_scale else raw
        result[fid] = [round(float(s), 6) for s in scores]
    return result


def write_outputs(path: Path, scores: dict[str, list[float]], labels: list[str] | None = None) -> Path:
    doc = {"format": "shoplens-device-outputs", "version": 1, "device": "test pipeline",
           "outputs": [{"id": k, "scores": v} for k, v in scores.items()]}  # fmt: skip
    if labels is not None:
        doc["labels"] = labels
    path.write_text(json.dumps(doc))
    return path
