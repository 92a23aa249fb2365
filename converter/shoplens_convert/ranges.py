"""Activation ranges for int8 that fit the bulk of the values, not the far end of a long tail.

TFLite's calibrator records the minimum and maximum of every activation over the calibration
images and quantizes each tensor to exactly that range. Where an activation has a long tail (the
swish and squeeze-and-excite blocks of the EfficientNets), the few largest values set a step far
coarser than the rest of the values need, and the range depends on which images happened to be
in the calibration set: on the zoo's EfficientNetB0, int8 agreement with the source fell from
89.6 % with 200 calibration images to 84.0 % with 1,000 (89.0 % with ``mse`` ranges; ``python -m
benchmarks.ranges``, docs/converter.md).

``mse`` ranges keep the calibrator's pass and then, per activation, choose the range that
minimises the expected squared quantization error over a histogram of its values on the same
calibration images: values inside the range cost the rounding error (step squared over 12),
values outside it cost their squared distance to the edge. Exact zeros (ReLU outputs) cost
nothing in any range that holds zero, so they do not vote for narrow ranges. This is the choice
PyTorch's histogram observer makes in the same place. Squared error weighs a far outlier
heavily, so a tail is clipped only where it is thin. The model's inputs and outputs keep their
recorded ranges: the input's range is the preprocessing contract (a uint8 input maps to its
pixels exactly) and the outputs' ranges are what callers dequantize with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shoplens.errors import ConversionError
from shoplens_convert.flatbuffer import pack_model, parse_model

__all__ = ["mse_range", "refine_ranges", "with_mse_ranges"]

_BINS = 8192
# candidate ends, as shares of the recorded ends: a swish block's bulk can lie under 5 % of its max
_GRID = np.geomspace(1e-3, 1.0, 160)


def mse_range(hist: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """The range ``(a, b)`` (``lo <= a <= 0 <= b <= hi``) with the least expected int8 error
    for values histogrammed in ``_BINS`` equal bins over ``[lo, hi]`` (zeros left out)."""
    if hist.sum() == 0 or hi <= lo:
        return lo, hi
    centers = lo + (np.arange(len(hist)) + 0.5) * (hi - lo) / len(hist)
    a = np.minimum(lo, 0.0) * _GRID  # (G,) candidate lower ends, 0 when lo >= 0
    b = np.maximum(hi, 0.0) * _GRID
    aa, bb = a[:, None], b[None, :]  # every pair: (G, G)
    step2 = ((bb - aa) / 255.0) ** 2 / 12.0
    # squared clipping distance per candidate end, summed over the bins beyond it
    below = np.clip(a[:, None] - centers[None, :], 0.0, None) ** 2 @ hist  # (G,)
    above = np.clip(centers[None, :] - b[:, None], 0.0, None) ** 2 @ hist
    outside_a = (centers[None, :] < a[:, None]).astype(np.float64) @ hist
    outside_b = (centers[None, :] > b[:, None]).astype(np.float64) @ hist
    inside = hist.sum() - outside_a[:, None] - outside_b[None, :]
    err = below[:, None] + above[None, :] + np.clip(inside, 0.0, None) * step2
    i, j = np.unravel_index(int(np.argmin(err)), err.shape)
    return float(a[i]), float(b[j])


def _activations(model: Any) -> list[tuple[int, Any]]:
    """(index, tensor) of every float tensor the calibrator gave a range, bar inputs and outputs."""
    sg = model.subgraphs[0]
    io = set(int(i) for i in sg.inputs) | set(int(i) for i in sg.outputs)
    out = []
    for i, t in enumerate(sg.tensors or []):
        q = t.quantization
        if i in io or q is None or q.min is None or q.max is None or len(q.min) != 1:
            continue
        out.append((i, t))
    return out


def refine_ranges(calibrated: bytes, samples: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    """The calibrated model with ``mse`` ranges measured on ``samples``, and what changed.

    ``calibrated`` is the float model with recorded ranges that TFLite's calibrator returns
    (``_experimental_calibrate_only``); the result goes on to the MLIR quantizer unchanged
    otherwise. Returns ``(model, stats)``: ``stats`` counts the activations and how much the
    median range narrowed.
    """
    from ai_edge_litert.interpreter import Interpreter

    model = parse_model(calibrated)
    if len(model.subgraphs or []) != 1:
        return calibrated, {"method": "minmax", "reason": "more than one subgraph"}
    acts = _activations(model)
    try:
        interp = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True)
        interp.allocate_tensors()
    except Exception as exc:  # the calibrated model is TFLite's own: a failure here is a bug
        raise ConversionError(f"cannot run the calibrated model to refine its ranges: {exc}") from None
    inp = interp.get_input_details()[0]["index"]
    hists = {i: np.zeros(_BINS, np.float64) for i, _ in acts}
    ends = {i: (float(t.quantization.min[0]), float(t.quantization.max[0])) for i, t in acts}
    for k in range(len(samples)):
        interp.set_tensor(inp, samples[k : k + 1].astype(np.float32, copy=False))
        interp.invoke()
        for i, _ in acts:
            lo, hi = ends[i]
            v = interp.get_tensor(i).ravel()
            v = v[v != 0.0]
            if hi > lo and v.size:
                hists[i] += np.histogram(v, bins=_BINS, range=(lo, hi))[0]
    narrowed = []
    for i, t in acts:
        lo, hi = ends[i]
        a, b = mse_range(hists[i], lo, hi)
        if hi > lo:
            narrowed.append((b - a) / (hi - lo))
        t.quantization.min = np.array([a], np.float32)
        t.quantization.max = np.array([b], np.float32)
    stats = {
        "method": "mse",
        "activations": len(acts),
        "narrowed": int(sum(1 for n in narrowed if n < 0.999)),
        "median_range_share": round(float(np.median(narrowed)), 4) if narrowed else 1.0,
    }
    return pack_model(model, len(calibrated)), stats


def with_mse_ranges(conv: Any, samples: np.ndarray) -> None:
    """Make ``conv`` (a configured int8 ``TFLiteConverter``) quantize with ``mse`` ranges.

    The converter's own int8 step is calibrate, then hand the calibrated model to the MLIR
    quantizer. This replaces that step on this converter object only (no module is patched, so
    other conversions in the process are untouched): calibrate as before, refine the ranges on
    ``samples`` (the images the calibrator saw), quantize with the same arguments.
    """
    from tensorflow.lite.python.convert import mlir_quantize

    original = conv._quantize

    def quantize(result: Any, input_type: Any, output_type: Any, activations_type: Any, *rest: Any) -> Any:
        import tensorflow as tf

        if activations_type != tf.int8 or not conv.experimental_new_quantizer:
            return original(result, input_type, output_type, activations_type, *rest)
        _bias_type, _allow_float, variable_quantization, debug_options = rest
        conv._experimental_calibrate_only = True
        try:
            calibrated = original(result, input_type, output_type, activations_type, *rest)
        finally:
            conv._experimental_calibrate_only = False
        refined, _stats = refine_ranges(bytes(calibrated), samples)
        return mlir_quantize(
            refined,
            conv._experimental_disable_per_channel,
            input_data_type=input_type,
            output_data_type=output_type,
            enable_variable_quantization=variable_quantization,
            disable_per_channel_for_dense_layers=(
                conv._experimental_disable_per_channel_quantization_for_dense_layers
            ),
            debug_options_str=debug_options.SerializeToString(),
        )

    conv._quantize = quantize
