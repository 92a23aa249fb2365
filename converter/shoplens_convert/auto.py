"""``--recipe auto``: the smallest, fastest candidate that the accuracy guard accepts.

int8 first; then int8 with selective float fallback (the worst 1, 2, 4, 8 layers by the
QuantizationDebugger's RMSE/scale stay float); then dynamic; then float16. The Edge TPU target
only tries full-integer candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from shoplens.errors import ConversionError, UsageError
from shoplens_convert.guard import AccuracyComparison
from shoplens_convert.quantize import quantize
from shoplens_convert.recipes import Recipe
from shoplens_convert.selective import fallback_quantize, rank_layers

__all__ = ["Judge", "auto_select"]

Judge = Callable[[str, bytes], tuple[bytes, "AccuracyComparison | None"]]


def _judged(judge: Any, name: str, raw: bytes) -> tuple[bytes, AccuracyComparison]:
    packed, cmp_ = judge(name, raw)
    if cmp_ is None:  # pragma: no cover - auto checks --eval-data before it starts
        raise UsageError("--recipe auto needs --eval-data")
    return packed, cmp_


def auto_select(
    model: Any,
    calibration: np.ndarray | None,
    recipe: Recipe,
    judge: Judge,
    *,
    target: str = "cpu",
    io_type: str = "uint8",
    per_tensor: bool = False,
    ranges: str = "minmax",
    show_progress: bool = False,
    fallback: dict[str, Any] | None = None,
) -> tuple[bytes, str, AccuracyComparison]:
    """Try the recipe's candidates in order; keep the first the guard passes (else the last).

    ``judge(name, tflite)`` packs a candidate and compares it with the source. The fallback
    ranking and the layers left in float are recorded in ``fallback`` when given.
    """
    fallback = fallback if fallback is not None else {}
    last: tuple[bytes, str, AccuracyComparison] | None = None
    for cand in recipe.candidates:
        if target == "edgetpu" and cand != "int8":
            continue  # the Edge TPU runs only full-integer graphs
        if cand == "int8-fallback":
            if calibration is None:
                raise UsageError("int8 with float fallback needs --calib-data")
            ranked = rank_layers(model, calibration, io_type=io_type, per_tensor=per_tensor)
            fallback["ranking"] = [
                {"tensor": e.tensor.split(";")[0], "op": e.op, "rmse_over_scale": round(e.rmse_over_scale, 4)}
                for e in ranked[:16]
            ]
            k = 1
            while k <= min(recipe.fallback_max_layers, len(ranked)):
                deny = [e.tensor for e in ranked[:k]]
                raw = fallback_quantize(model, calibration, deny, io_type=io_type, per_tensor=per_tensor,
                                        ranges=ranges)  # fmt: skip
                packed, cmp_ = _judged(judge, f"int8-fallback-{k}", raw)
                last = (packed, f"int8-fallback ({k} float layer{'s' if k > 1 else ''})", cmp_)
                if cmp_.passed:
                    fallback["float_layers"] = [d.split(";")[0] for d in deny]
                    return last
                k *= 2
            continue
        raw = quantize(model, cand, calibration=calibration, io_type=io_type, per_tensor=per_tensor,
                       static_batch=target == "edgetpu", ranges=ranges,
                       show_progress=show_progress)  # fmt: skip
        packed, cmp_ = _judged(judge, cand, raw)
        last = (packed, cand, cmp_)
        if cmp_.passed:
            return last
    if last is None:
        raise ConversionError("auto: no candidate recipe applies to this target")
    return last
