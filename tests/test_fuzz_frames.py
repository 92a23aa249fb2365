"""Fuzzed frames (hypothesis): classify() returns a result or raises InvalidFrameError, nothing else.

Arbitrary shapes, dtypes, strides and non-contiguous views, NaN/inf, tiny and very long frames,
and ROIs partly or wholly outside the frame, through a real interpreter. CI runs a bounded number
of examples; ``make fuzz`` runs many more (SHOPLENS_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shoplens.classifier import Classifier
from shoplens.errors import InvalidFrameError
from shoplens.results import ClassificationResult

EXAMPLES = int(os.environ.get("SHOPLENS_FUZZ_EXAMPLES", "250"))
ROIS = [None, (0, 0, 16, 16), (-50, -50, 80, 80), (5000, 5000, 10, 10), (3, 2, 1, 1), (-10, 4, 9, 400)]

DTYPES = st.sampled_from(
    [np.uint8, np.float32, np.float64, np.int16, np.int32, np.bool_, np.float16, np.int8]
)
SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]


@st.composite
def frames(draw: st.DrawFn) -> np.ndarray:
    ndim = draw(st.integers(0, 4))
    if draw(st.booleans()):  # mostly image-like
        h, w = draw(st.integers(0, 70)), draw(st.integers(0, 70))
        shape: tuple[int, ...] = (h, w) if ndim < 3 else (h, w, draw(st.sampled_from([0, 1, 2, 3, 4, 5])))
    else:  # anything, including very long thin frames
        shape = tuple(draw(st.lists(st.integers(0, 3000), min_size=ndim, max_size=ndim)))
        if int(np.prod(shape, dtype=np.int64)) > 400_000:
            shape = tuple(min(s, 40) for s in shape)
    dtype = draw(DTYPES)
    fill = hnp.from_dtype(np.dtype(dtype), allow_nan=True, allow_infinity=True)
    arr = draw(hnp.arrays(dtype, shape, elements=fill))
    if arr.ndim >= 2 and draw(st.booleans()):  # a strided, non-contiguous view
        arr = arr[:: draw(st.integers(1, 3)), :: draw(st.integers(1, 3))]
    if arr.ndim == 3 and draw(st.booleans()):
        arr = arr[:, :, ::-1]
    if arr.ndim >= 2 and draw(st.booleans()):
        arr = np.swapaxes(arr, 0, 1)
    return arr


@pytest.fixture(scope="module")
def classifiers(tiny_rgb) -> list[Classifier]:
    cls = [Classifier.create_from_model_path(tiny_rgb["int8"], roi=r) for r in ROIS]
    cls.append(Classifier.create_from_model_path(tiny_rgb["f32"]))
    yield cls
    for c in cls:
        c.close()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=SLOW_OK)
@given(frame=frames(), which=st.integers(0, len(ROIS)))
def test_classify_returns_a_result_or_invalid_frame(classifiers, frame: np.ndarray, which: int) -> None:
    clf = classifiers[which]
    try:
        r = clf.classify(frame)
    except InvalidFrameError:
        return
    assert isinstance(r, ClassificationResult)
    assert r.categories and all(np.isfinite(c.score) and 0 <= c.score <= 1 for c in r.categories)


@settings(max_examples=max(50, EXAMPLES // 5), deadline=None, suppress_health_check=SLOW_OK)
@given(frame=frames())
def test_preprocessing_returns_a_tensor_or_invalid_frame(classifiers, frame: np.ndarray) -> None:
    pre = classifiers[0].preprocessor
    try:
        out = pre(frame)
    except InvalidFrameError:
        return
    assert out.shape == pre.out_shape and out.dtype == pre.out_dtype
