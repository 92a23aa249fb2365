"""int8 activation ranges by least squared error (``--ranges mse``): the choice, and real conversions."""

from __future__ import annotations

import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.data.spec import open_dataset
from shoplens.tflite_model import read_model_info
from shoplens_convert.load import load_keras_model
from shoplens_convert.quantize import calibration_frames, quantize
from shoplens_convert.ranges import _BINS, mse_range


def _hist(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    lo, hi = float(values.min()), float(values.max())
    return np.histogram(values, bins=_BINS, range=(lo, hi))[0].astype(np.float64), lo, hi


def _int8_error(x: np.ndarray, a: float, b: float) -> float:
    scale = (b - a) / 255.0
    zero = np.round(-a / scale)
    q = np.clip(np.round(x / scale) + zero, 0, 255)
    return float(np.mean(((q - zero) * scale - x) ** 2))


def test_a_long_tail_does_not_set_the_range() -> None:
    rng = np.random.default_rng(0)
    tail = rng.standard_t(2, 200_000)  # a long tail: its min and max lie far beyond the bulk
    a, b = mse_range(*_hist(tail))
    assert 0.0 < b < 0.9 * tail.max() and 0.0 > a > 0.9 * tail.min(), (a, b, tail.min(), tail.max())
    # measured by quantizing the values themselves, not the histogram: the error is smaller
    assert _int8_error(tail, a, b) < 0.8 * _int8_error(tail, tail.min(), tail.max())
    # values spread evenly over their range have nothing to clip: the range stays whole
    a, b = mse_range(*_hist(rng.uniform(-1.0, 3.0, 100_000)))
    assert a <= -0.95 and b >= 2.85, (a, b)
    # ReLU-like values keep 0 as their lower end
    a, b = mse_range(*_hist(np.abs(tail)))
    assert a == 0.0 and 2.0 < b < 0.9 * np.abs(tail).max()


def _io_quantization(info) -> list[tuple[tuple[float, ...], tuple[int, ...]]]:  # type: ignore[no-untyped-def]
    return [(tuple(t.scales), tuple(t.zero_points)) for t in (*info.inputs, *info.outputs)]


def test_mse_ranges_narrow_activations_and_keep_the_model_s_answers(tiny_rgb) -> None:
    from ai_edge_litert.interpreter import Interpreter

    model = load_keras_model(tiny_rgb["keras"]).model
    c = PreprocessContract.load(tiny_rgb["keras"].parent / "contract.json")
    cal = calibration_frames(open_dataset("fashion-mnist:train:200"), c, 200)
    test = calibration_frames(open_dataset("fashion-mnist:test:300"), c, 300)
    minmax = quantize(model, "int8", calibration=cal, io_type="float32")
    mse = quantize(model, "int8", calibration=cal, io_type="float32", ranges="mse")
    a, b = read_model_info(minmax), read_model_info(mse)
    # the input's range is the contract's and the outputs' are what callers dequantize with
    assert _io_quantization(a) == _io_quantization(b)
    acts = {t.name: t.scales[0] for t in a.tensors if t.dtype == "int8" and len(t.scales) == 1}
    narrowed = [t.scales[0] / acts[t.name] for t in b.tensors if t.name in acts and len(t.scales) == 1]
    assert narrowed and min(narrowed) < 0.99 and max(narrowed) <= 1.0 + 1e-6

    def top1(tflite: bytes) -> np.ndarray:
        it = Interpreter(model_content=tflite)
        it.allocate_tensors()
        i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        out = []
        for k in range(len(test)):
            it.set_tensor(i, test[k : k + 1])
            it.invoke()
            out.append(int(it.get_tensor(o).argmax()))
        return np.array(out)

    source = model.predict(test, verbose=0).argmax(1)
    agree_minmax, agree_mse = (float((top1(m) == source).mean()) for m in (minmax, mse))
    assert agree_mse >= 0.95 and agree_mse >= agree_minmax - 0.02, (agree_minmax, agree_mse)


def test_float_fallback_candidates_get_mse_ranges_too(tiny_rgb) -> None:
    """auto's int8-with-float-fallback candidates quantize with the ranges asked for."""
    from shoplens_convert.selective import fallback_quantize, rank_layers

    model = load_keras_model(tiny_rgb["keras"]).model
    c = PreprocessContract.load(tiny_rgb["keras"].parent / "contract.json")
    cal = calibration_frames(open_dataset("fashion-mnist:train:200"), c, 200)
    deny = [rank_layers(model, cal, io_type="float32")[0].tensor]
    a = read_model_info(fallback_quantize(model, cal, deny, io_type="float32"))
    b = read_model_info(fallback_quantize(model, cal, deny, io_type="float32", ranges="mse"))
    # the denylisted layer stays float in both
    for info in (a, b):
        assert {t.dtype for t in info.tensors if t.name == deny[0]} == {"float32"}
    acts = {t.name: t.scales[0] for t in a.tensors if t.dtype == "int8" and len(t.scales) == 1}
    narrowed = [t.scales[0] / acts[t.name] for t in b.tensors if t.name in acts and len(t.scales) == 1]
    assert narrowed and min(narrowed) < 0.99 and max(narrowed) <= 1.0 + 1e-6
