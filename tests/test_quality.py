"""The two-stage quality gate on real kiosk scenes at the reference model's 96x96 linear view."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shoplens.contract import PreprocessContract
from shoplens.data.fashion_mnist import load_fashion_mnist
from shoplens.data.kiosk import render_scene
from shoplens.errors import UsageError
from shoplens.preprocess import Preprocessor
from shoplens.quality import QualityOptions, area_view, gate_frame, laplacian_variance


def _verdicts(kind: str | None, n: int = 40, **opts):
    x, _ = load_fashion_mnist("test")
    pre = Preprocessor(PreprocessContract.from_range(96, 96, -1, 1, interpolation="linear"))
    q = QualityOptions(policy="reject", **opts)
    out = []
    for i in range(n):
        frame = render_scene(x[i], np.random.default_rng(i), bad=kind)
        view = pre.process(frame, np.empty(pre.out_shape, pre.out_dtype))
        out.append(gate_frame(view.resized, view.crop, view.crop_side, q, resized_is_area=False))
    return out


def test_two_stage_gate_separates_sharp_from_blurred() -> None:
    good = _verdicts(None)
    blurred = _verdicts("blur")
    assert np.mean([v.ok for v in good]) >= 0.9
    assert np.mean(["blur" in v.reasons for v in blurred]) >= 0.85
    # the cheap stage decides most good frames on its own: no area view, sharpness left unmeasured
    assert np.mean([np.isnan(v.sharpness) for v in good]) >= 0.8
    assert any(not np.isnan(v.sharpness) for v in blurred)  # and the band does reach the area view
    assert all(not np.isnan(v.fast_sharpness) for v in good + blurred)


def test_band_edges_force_each_stage() -> None:
    # an empty band: the fast stage decides everything
    only_fast = _verdicts(None, 10, fast_blurred_below=20.0, fast_sharp_above=20.0)
    assert all(np.isnan(v.sharpness) for v in only_fast)
    # a huge band: the area view decides everything, exactly as the area-only gate would
    x, _ = load_fashion_mnist("test")
    only_area = _verdicts(None, 10, fast_blurred_below=-1e9, fast_sharp_above=1e9)
    pre = Preprocessor(PreprocessContract.from_range(96, 96, -1, 1, interpolation="linear"))
    for i, v in enumerate(only_area):
        frame = render_scene(x[i], np.random.default_rng(i))
        view = pre.process(frame, np.empty(pre.out_shape, pre.out_dtype))
        gray = cv2.cvtColor(area_view(view.crop), cv2.COLOR_BGR2GRAY)
        assert v.sharpness == pytest.approx(laplacian_variance(gray))
    with pytest.raises(UsageError, match="fast_blurred_below"):
        QualityOptions(fast_blurred_below=40.0, fast_sharp_above=30.0)
