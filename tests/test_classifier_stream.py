"""LIVE_STREAM mode: latest frame wins, the camera never blocks, every frame is accounted for."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from shoplens.classifier import Classifier
from shoplens.data import load_fashion_mnist
from shoplens.errors import UsageError


def test_live_stream_drops_stale_frames_and_closes_cleanly(tiny_rgb) -> None:
    x, _ = load_fashion_mnist("test")
    got: list[int] = []
    release = threading.Event()
    entered = threading.Event()
    before = {t.ident for t in threading.enumerate()}

    def on_result(result, frame, ts: int) -> None:
        entered.set()
        release.wait(10)  # a stuck consumer: the worker cannot take new frames
        got.append(ts)

    clf = Classifier.create_from_model_path(
        tiny_rgb["int8"], running_mode="live_stream", result_callback=on_result
    )
    clf.classify_async(x[0], 0)
    assert entered.wait(10)  # the worker is now stuck in the callback with frame 0
    for i in range(1, 300):  # must finish although the worker is stuck: the camera never blocks
        clf.classify_async(x[i % 50], i)
    finished_while_stuck = not release.is_set()
    release.set()
    assert clf.wait_idle(10)
    st = clf.stream_stats
    assert finished_while_stuck
    assert st.submitted == 300
    assert st.processed == 2 and st.dropped == 298  # frame 0, then the latest frame wins
    assert st.processed + st.dropped + st.rejected_invalid + st.rejected_quality == 300
    assert got == [0, 299]
    with pytest.raises(UsageError, match="timestamps must increase"):
        clf.classify_async(x[0], 5)
    clf.close()
    clf.close()  # idempotent
    assert {t.ident for t in threading.enumerate()} == before


def test_live_stream_survives_faults(tiny_rgb) -> None:
    """None frames, a size change and a raising callback: every frame is accounted for."""
    x, _ = load_fashion_mnist("test")
    seen: list[tuple[int, bool]] = []

    def on_result(result, frame, ts: int) -> None:
        seen.append((ts, result.rejected))
        if ts == 3:
            raise RuntimeError("callback bug")

    with Classifier.create_from_model_path(
        tiny_rgb["int8"], running_mode="live_stream", result_callback=on_result
    ) as clf:
        frames = [x[0], None, np.zeros((0, 3), np.uint8), x[1], cv2.resize(x[2], (64, 48)), x[3]]
        for ts, f in enumerate(frames):
            clf.classify_async(f, ts)
            clf.wait_idle(5)
        st = clf.stream_stats
    assert st.submitted == 6 and st.rejected_invalid == 2 and st.processed == 4 and st.dropped == 0
    assert st.callback_errors == 1
    assert [ts for ts, _ in seen] == [0, 1, 2, 3, 4, 5]
