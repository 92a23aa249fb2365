"""The tflite_runtime back end (numpy<2 venv, as on Coral boards) gives LiteRT's results."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from shoplens import Classifier, ClassifierOptions
from shoplens.data import load_fashion_mnist, render_scene

VENV_PY = ROOT / ".venv-tflrt" / "bin" / "python"

SCRIPT = r"""
import json, sys
import numpy as np
from shoplens import Classifier, ClassifierOptions
frames = np.load(sys.argv[2])
assert np.__version__.startswith("1."), np.__version__
with Classifier.create_from_model_path(sys.argv[1], backend="tflite_runtime",
                                       classifier_options=ClassifierOptions(max_results=10)) as clf:
    out = [[(c.index, c.score) for c in clf.classify(f).categories] for f in frames]
    print(json.dumps({"backend": clf.backend, "numpy": np.__version__, "results": out}))
"""


def _venv() -> Path:
    if not VENV_PY.exists():
        if os.environ.get("CI"):
            pytest.fail(".venv-tflrt is missing; `make test` creates it")
        pytest.skip(".venv-tflrt is missing; run `make setup` to create it")
    return VENV_PY


def test_tflite_runtime_matches_litert(tiny_rgb, tmp_path: Path) -> None:
    py = _venv()
    x, _ = load_fashion_mnist("test")
    frames = np.stack([render_scene(x[i], np.random.default_rng(i)) for i in range(40)])
    np.save(tmp_path / "frames.npy", frames)
    proc = subprocess.run(
        [str(py), "-c", SCRIPT, str(tiny_rgb["int8"]), str(tmp_path / "frames.npy")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["backend"] == "tflite_runtime" and doc["numpy"].startswith("1.")
    with Classifier.create_from_model_path(tiny_rgb["int8"], classifier_options=ClassifierOptions(10)) as clf:
        assert clf.backend == "ai_edge_litert"
        ref = [[(c.index, c.score) for c in clf.classify(f).categories] for f in frames]
    assert [r[0][0] for r in doc["results"]] == [r[0][0] for r in ref]  # same top-1 on every frame
    # Preprocessing is bit-identical across the two venvs (OpenCV 4.11 vs 5.0; checked when this
    # test was written), but the runtimes ship different int8 kernels (tflite-runtime 2.14 vs
    # LiteRT 2.3, softmax in particular), so scores may differ by a few output steps (1/256).
    got = np.array([sorted(r) for r in doc["results"]])[:, :, 1]
    want = np.array([sorted(r) for r in ref])[:, :, 1]
    assert np.abs(got - want).max() <= 10 / 256
    assert np.abs(got - want).mean() < 0.5 / 256


PRE_SCRIPT = r"""
import sys
import numpy as np
from shoplens.contract import PreprocessContract
from shoplens.preprocess import InputQuantization, Preprocessor
frames = np.load(sys.argv[1])
q = InputQuantization(1 / 127.5, 0, np.int8)
pre = Preprocessor(PreprocessContract.from_range(96, 96, -1, 1), quantization=q)
np.save(sys.argv[2], np.stack([pre(f) for f in frames]))
"""


def test_preprocessing_is_bit_identical_across_venvs(tmp_path: Path) -> None:
    """numpy 1.26 + OpenCV 4.11 (Coral-style venv) and numpy 2 + OpenCV 5 give the same tensors."""
    from shoplens.contract import PreprocessContract
    from shoplens.preprocess import InputQuantization, Preprocessor

    py = _venv()
    x, _ = load_fashion_mnist("test")
    frames = np.stack([render_scene(x[i], np.random.default_rng(i)) for i in range(20)])
    np.save(tmp_path / "frames.npy", frames)
    proc = subprocess.run(
        [str(py), "-c", PRE_SCRIPT, str(tmp_path / "frames.npy"), str(tmp_path / "out.npy")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    pre = Preprocessor(
        PreprocessContract.from_range(96, 96, -1, 1), quantization=InputQuantization(1 / 127.5, 0, np.int8)
    )
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), np.stack([pre(f) for f in frames]))


def test_runtime_only_venv_cli(tiny_rgb, tmp_path) -> None:
    """In a venv with the runtime only (no TensorFlow at all), the SDK commands work and the
    converter commands say what to install."""
    py = _venv()
    shoplens = py.parent / "shoplens"
    env = {"PATH": str(py.parent), "HOME": str(ROOT)}
    helped = subprocess.run([str(shoplens), "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert helped.returncode == 0 and "classify" in helped.stdout
    probe = subprocess.run([str(py), "-c", "import tensorflow"], capture_output=True, text=True, env=env)
    assert probe.returncode != 0  # really no TensorFlow here
    inspected = subprocess.run(
        [str(shoplens), "inspect", str(tiny_rgb["int8"]), "--json"], capture_output=True, text=True, env=env
    )
    assert (
        inspected.returncode == 0 and json.loads(inspected.stdout)["shoplens"]["labels"][0] == "T-shirt/top"
    )
    ev = subprocess.run(
        [str(shoplens), "eval", str(tiny_rgb["keras"]), "--data", "fashion-mnist:test:5"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    want = (
        "error: the converter needs tensorflow, flatbuffers; install it with: pip install 'shoplens[convert]'"
    )
    assert ev.returncode == 2 and ev.stderr.strip() == want
    conv = subprocess.run(
        [str(shoplens), "convert", str(tiny_rgb["keras"]), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert conv.returncode == 2 and conv.stderr.strip() == want and not (tmp_path / "o").exists()
