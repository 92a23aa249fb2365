"""Checks a device runs a ShopLens bundle exactly as the host did, within the bundle's budgets.

    pytest device_tests --bundle DIR [--delegate edgetpu] [--device usb] [--threads N] [--backend B]

Every check reads its tolerance from the bundle's manifest (``budgets``), so a team tightens a
budget by writing a new bundle, not by editing tests.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def _rss_mb() -> float:
    """Resident set size of this process now (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if peak > 2**32 else peak / 1024  # bytes on macOS, KiB on Linux


def test_manifest_integrity(bundle_dir: Path, manifest: dict[str, Any], expected: dict[str, Any]) -> None:
    listed = set(manifest["files"])
    for row in expected["frames"]:
        assert row["frame"] in listed and row["input"] in listed
    assert {"model.tflite", "labels.txt", "contract.json", "expected.json"} <= listed
    assert len(expected["frames"]) == manifest["frames"]
    labels = (bundle_dir / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert labels == manifest["labels"]


def test_model_loads_with_requested_delegate(classifier, manifest, pytestconfig: pytest.Config) -> None:
    assert classifier.delegate == pytestconfig.getoption("--delegate")
    assert list(classifier.labels) == manifest["labels"]
    assert classifier.contract.to_dict() == manifest["contract"]
    print(f"backend {classifier.backend}, delegate {classifier.delegate}")


def test_preprocessing_parity(classifier, frames, expected, manifest, budgets, bundle_dir: Path) -> None:
    """The SDK's input tensors equal the golden ones within +-input_tolerance_steps."""
    pre = classifier.preprocessor
    dtype = np.dtype(expected["input_dtype"])
    shape = tuple(expected["input_shape"])
    assert (pre.out_dtype, (1, *pre.out_shape)) == (dtype, shape), (
        "the model's input differs from the bundle's"
    )
    steps = float(budgets["input_tolerance_steps"])
    # quantized input: steps of the integer; float input: pixel steps, one being 1/std model units
    tol = steps if dtype.kind in "iu" else steps / min(manifest["contract"]["std"]) + 1e-6
    worst = 0.0
    for frame, row in zip(frames, expected["frames"], strict=True):
        golden = np.frombuffer((bundle_dir / row["input"]).read_bytes(), dtype).reshape(shape)
        mine = np.empty(shape, dtype)
        pre(frame, mine)
        diff = float(np.max(np.abs(mine.astype(np.float64) - golden.astype(np.float64))))
        worst = max(worst, diff)
        assert diff <= tol, f"{row['frame']}: input differs by {diff} (tolerance {tol})"
    print(f"worst input difference {worst}")


def test_output_parity(classifier, frames, expected, budgets) -> None:
    """Top-1 equal to the host's and every score within score_tolerance."""
    tol = float(budgets["score_tolerance"])
    worst = 0.0
    for frame, row in zip(frames, expected["frames"], strict=True):
        scores = _scores(classifier, frame)
        assert int(np.argmax(scores)) == row["top1"], (
            f"{row['frame']}: top-1 {np.argmax(scores)} vs {row['top1']}"
        )
        d = float(np.max(np.abs(scores - np.asarray(row["scores"]))))
        worst = max(worst, d)
        assert d <= tol, f"{row['frame']}: a score differs by {d:.4f} (tolerance {tol})"
    print(f"worst score difference {worst:.6f}")


def _scores(classifier, frame) -> np.ndarray:
    pre = classifier.preprocessor
    x = np.empty((1, *pre.out_shape), pre.out_dtype)
    pre(frame, x)
    return classifier.predict_preprocessed(x)[0]


def test_latency_p95_within_budget(classifier, frames, budgets) -> None:
    """End to end (preprocess + invoke + results) on the golden frames, after a warm-up."""
    for f in frames[:5]:
        classifier.classify(f)
    times = []
    for i in range(max(200, len(frames))):
        t0 = time.perf_counter()
        classifier.classify(frames[i % len(frames)])
        times.append((time.perf_counter() - t0) * 1e3)
    p50, p95 = np.percentile(times, [50, 95])
    print(f"latency p50 {p50:.2f} ms, p95 {p95:.2f} ms (budget {budgets['latency_p95_ms']} ms)")
    assert p95 <= float(budgets["latency_p95_ms"]), (
        f"p95 {p95:.2f} ms > budget {budgets['latency_p95_ms']} ms"
    )


def test_rss_growth_over_1000_invocations(classifier, frames, budgets) -> None:
    for f in frames[:20]:
        classifier.classify(f)
    before = _rss_mb()
    for i in range(1000):
        classifier.classify(frames[i % len(frames)])
    growth = _rss_mb() - before
    budget = float(budgets["rss_growth_mb_per_1000"])
    print(f"RSS growth over 1,000 invocations: {growth:.2f} MB (budget {budget} MB)")
    assert growth <= budget


def test_four_threads_share_one_classifier(classifier, frames) -> None:
    """Concurrent callers get exactly the single-threaded answers (the classifier serialises)."""
    want = [_scores(classifier, f) for f in frames]
    errors: list[str] = []

    def work(k: int) -> None:
        try:
            for rep in range(5):
                for i in range(len(frames)):
                    j = (i + k + rep) % len(frames)
                    r = classifier.classify(frames[j])
                    if r.top is None or r.top.index != int(np.argmax(want[j])):
                        errors.append(f"thread {k}: frame {j} top-1 {r.top} vs {int(np.argmax(want[j]))}")
                    elif abs(r.top.score - float(np.max(want[j]))) > 1e-6:
                        errors.append(
                            f"thread {k}: frame {j} score {r.top.score} vs {float(np.max(want[j]))}"
                        )
        except Exception as exc:
            errors.append(f"thread {k}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors[:5]
