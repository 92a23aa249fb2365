"""Selective float fallback for int8: keep the few layers that quantize worst in float.

``tf.lite.experimental.QuantizationDebugger`` runs the calibrated model with numeric-verify ops
and reports, per quantized tensor, the error between the float and the dequantized int8 result.
Layers are ranked by RMSE in units of their own quantization step (``sqrt(mse) / scale``), the
measure the TFLite team recommends; the top-k tensors are then denylisted, so their ops run in
float while the rest stays int8.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from shoplens_convert._tf import tensorflow
from shoplens_convert.quantize import make_converter, run_converter

__all__ = ["LayerError", "fallback_quantize", "rank_layers"]


@dataclass(frozen=True)
class LayerError:
    tensor: str
    op: str
    rmse_over_scale: float


def _debug_dataset(calibration: np.ndarray) -> Any:
    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(len(calibration)):
            yield [calibration[i : i + 1]]

    return gen


def rank_layers(
    model: Any, calibration: np.ndarray, *, io_type: str = "uint8", per_tensor: bool = False
) -> list[LayerError]:
    """Quantized tensors ordered from worst to best by RMSE / scale on the calibration images."""
    tf = tensorflow()

    def run() -> bytes:
        conv = make_converter(model, "int8", calibration=calibration, io_type=io_type,
                              per_tensor=per_tensor, allow_float_ops=True)  # fmt: skip
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=conv, debug_dataset=_debug_dataset(calibration)
        )
        debugger.run()
        out = io.StringIO()
        debugger.layer_statistics_dump(out)
        return out.getvalue().encode()

    table = run_converter("quantization debugger", run).decode()
    ranked: list[LayerError] = []
    for row in csv.DictReader(io.StringIO(table)):
        try:
            mse, scale = float(row["mean_squared_error"]), float(row["scale"])
        except (KeyError, ValueError):
            continue
        if scale > 0 and math.isfinite(mse):
            ranked.append(
                LayerError(row.get("tensor_name", ""), row.get("op_name", ""), math.sqrt(mse) / scale)
            )
    ranked.sort(key=lambda e: -e.rmse_over_scale)
    return ranked


def fallback_quantize(
    model: Any,
    calibration: np.ndarray,
    denylist: list[str],
    *,
    io_type: str = "uint8",
    per_tensor: bool = False,
    ranges: str = "minmax",
) -> bytes:
    """int8 model with the ops producing ``denylist`` tensors left in float.

    ``ranges="mse"`` quantizes the rest with least-squares activation ranges, as ``--ranges mse``
    does for plain int8 (:mod:`shoplens_convert.ranges`); the ranking that chose ``denylist`` was
    measured with the calibrator's min/max ranges.
    """
    tf = tensorflow()

    def run() -> bytes:
        conv = make_converter(model, "int8", calibration=calibration, io_type=io_type,
                              per_tensor=per_tensor, allow_float_ops=True)  # fmt: skip
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=conv,
            debug_dataset=_debug_dataset(calibration),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(denylist)),
        )
        if ranges == "mse":  # the debugger quantizes its public calibrated_model: refine it first
            from shoplens_convert.ranges import refine_ranges

            debugger.calibrated_model = refine_ranges(bytes(debugger.calibrated_model), calibration)[0]
        return bytes(debugger.get_nondebug_quantized_model())

    return run_converter(f"int8 with {len(denylist)} float layers", run)
