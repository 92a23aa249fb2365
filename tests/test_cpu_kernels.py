"""CPU kernels: XNNPACK, LiteRT's own, or the faster of the two on the model (``cpu_kernels``).

Real interpreters on a real converted model and real Fashion-MNIST images. Which kernels are faster
is a speed figure: ``python -m benchmarks.depthwise_kernels`` measures it (and what ``auto`` picks),
not these tests.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT, one_line_error, run_cli
from shoplens import BaseOptions, Classifier, CpuKernels, Embedder
from shoplens.data import load_fashion_mnist
from shoplens.errors import UsageError
from shoplens.runtime import pick_cpu_kernels

RELEASE = ROOT / "sample_apps" / "reference_model" / "release"


def _has_xnnpack(task: Classifier | Embedder) -> bool:
    """XNNPACK, when applied, replaces the ops it runs by DELEGATE nodes in the execution plan."""
    return any(d["op_name"] == "DELEGATE" for d in task._interp._get_ops_details())


@pytest.mark.parametrize("kernels", ["xnnpack", "builtin"])
def test_kernels_are_the_ones_asked_for(tiny_rgb, kernels: str) -> None:
    with Classifier.create_from_model_path(tiny_rgb["int8"], cpu_kernels=kernels) as clf:
        assert clf.cpu_kernels == kernels
        assert _has_xnnpack(clf) is (kernels == "xnnpack")
        assert clf.kernel_ms == {}  # only auto times them


def test_builtin_kernels_give_the_same_answers(tiny_rgb) -> None:
    x, _ = load_fashion_mnist("test")
    frames = [np.repeat(img[:, :, None], 3, axis=2) for img in x[:200]]
    scores = {}
    for k in ("xnnpack", "builtin"):
        with Classifier.create_from_model_path(tiny_rgb["int8"], cpu_kernels=k, max_results=10) as clf:
            scores[k] = np.array([[c.score for c in sorted(clf.classify(f).categories, key=lambda c: c.index)]
                                  for f in frames])  # fmt: skip
    a, b = scores["xnnpack"], scores["builtin"]
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.99
    # the two round intermediate int8 values their own ways: a few steps of the uint8 output at most
    print(f"top-1 agree {(a.argmax(1) == b.argmax(1)).mean():.3f}, |delta| mean {np.abs(a - b).mean():.5f} "
          f"max {np.abs(a - b).max():.4f}")
    assert np.abs(a - b).mean() <= 1 / 256 and np.abs(a - b).max() <= 12 / 256


def test_auto_keeps_the_kernels_it_timed_faster(tiny_rgb) -> None:
    for task, path in ((Classifier, tiny_rgb["int8"]), (Embedder, RELEASE / "embedding.tflite")):
        with task.create_from_model_path(path, cpu_kernels="auto") as t:
            ms = t.kernel_ms
            assert set(ms) == {"xnnpack", "builtin"} and all(v > 0 for v in ms.values())
            assert t.cpu_kernels == pick_cpu_kernels(ms["xnnpack"], ms["builtin"]).value
            assert _has_xnnpack(t) is (t.cpu_kernels == "xnnpack")


def test_auto_rule_prefers_xnnpack_unless_clearly_slower() -> None:
    assert pick_cpu_kernels(7.0, 2.4) is CpuKernels.BUILTIN  # NASNetMobile int8 on this machine
    assert pick_cpu_kernels(0.44, 1.46) is CpuKernels.XNNPACK  # the reference model
    assert pick_cpu_kernels(1.0, 0.95) is CpuKernels.XNNPACK  # within 10 %: the default stays


def test_unknown_kernels_are_refused(tiny_rgb) -> None:
    with pytest.raises(UsageError, match="cpu_kernels: xnnpack, builtin, auto"):
        BaseOptions(model_asset_path=tiny_rgb["int8"], cpu_kernels="gpu")
    one_line_error(run_cli("classify", str(tiny_rgb["int8"]), "--cpu-kernels", "gpu"), 2, "--cpu-kernels")


def test_cli_reports_the_kernels_it_ran(tiny_rgb, tmp_path) -> None:
    import cv2

    x, _ = load_fashion_mnist("test")
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), x[i])
    proc = run_cli("classify", str(tiny_rgb["int8"]), str(tmp_path), "--cpu-kernels", "builtin", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])["summary"]
    assert summary["cpu_kernels"] == "builtin" and summary["classified"] == 3
    proc = run_cli("classify", str(tiny_rgb["int8"]), str(tmp_path), "--cpu-kernels", "auto")
    assert proc.returncode == 0, proc.stderr
    assert "cpu kernels: auto chose" in proc.stderr and "xnnpack" in proc.stderr
