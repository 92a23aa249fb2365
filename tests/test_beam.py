"""Catalog scale on Apache Beam: real pipelines on the DirectRunner (2 worker processes).

Beam lives in its own venv (``.venv-beam``: the runtime and Beam only, as on a Beam worker; no
TensorFlow), so every Beam run here is a real subprocess of that venv's ``shoplens``; the models
are converted in this venv. On 10,000 real Fashion-MNIST images written as PNG files, plus corrupt
ones, the Beam drift report must equal the in-process ``shoplens drift`` report exactly; the dead
letters must list every bad file; the Beam index must give the same top-10 as the in-process one.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

BEAM_PY = ROOT / ".venv-beam" / "bin" / "python"
BEAM_CLI = ROOT / ".venv-beam" / "bin" / "shoplens"
N_IMAGES = 10_000


def _beam_venv() -> Path:
    if not BEAM_PY.exists():
        if os.environ.get("CI"):
            pytest.fail(".venv-beam is missing; `make test` creates it")
        pytest.skip(".venv-beam is missing; run `make setup` to create it")
    return BEAM_PY


def _beam(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    _beam_venv()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [str(BEAM_CLI), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env
    )


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10,000 test images as PNG files, one folder per class, plus three files that are not images."""
    import cv2

    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist

    root = tmp_path_factory.mktemp("beam") / "catalog"
    x, y = load_fashion_mnist("test")
    for i in range(N_IMAGES):
        d = root / FASHION_MNIST_LABELS[int(y[i])].replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i:05d}.png"), x[i])
    a_png = next(iter(sorted((root / "Dress").iterdir()))).read_bytes()
    (root / "Bag" / "truncated.png").write_bytes(a_png[:40])
    (root / "Coat" / "notes.png").write_bytes(b"this is a text file, not an image\n")
    cv2.imwrite(str(root / "Shirt" / "tiny.png"), np.zeros((1, 1), np.uint8))
    return root


BAD = {"Bag/truncated.png", "Coat/notes.png", "Shirt/tiny.png"}


def test_catalog_drift_on_beam_equals_in_process_drift(tiny_rgb, catalog: Path, tmp_path: Path) -> None:
    ref, cand = str(tiny_rgb["f32"]), str(tiny_rgb["int8"])
    beam = _beam(
        "drift",
        ref,
        cand,
        "--data",
        str(catalog),
        "--runner",
        "direct",
        "--workers",
        "2",
        "--slice",
        "category",
        "--json",
        "--save",
        str(tmp_path / "beam.json"),
    )
    assert beam.returncode == 0, beam.stderr
    assert beam.stderr.strip() == ""  # Beam's and its workers' log lines stay off the CLI's output
    here = _beam("drift", ref, cand, "--data", str(catalog), "--json")
    assert here.returncode == 0, here.stderr
    b, h = json.loads(beam.stdout), json.loads(here.stdout)
    assert b["n"] == h["n"] == N_IMAGES
    for key in (
        "reference_confusion",
        "candidate_confusion",
        "agreement",
        "reference_top1",
        "candidate_top1",
        "reference_top5",
        "candidate_top5",
        "drop_pts",
        "drop_ci95_pts",
        "disagreeing_total",
    ):
        assert b[key] == h[key], key
    assert b["kl_mean"] == pytest.approx(h["kl_mean"], abs=1e-9)
    assert b["abs_score_delta_mean"] == pytest.approx(h["abs_score_delta_mean"], abs=1e-9)
    assert sorted(b["disagreeing_ids"]) == sorted(h["disagreeing_ids"])
    assert b["per_class"] == h["per_class"]
    c = b["catalog"]
    assert c["bad"] == 3 and {d["id"] for d in c["dead_letters"]} == BAD
    reasons = {d["id"]: d["reason"] for d in c["dead_letters"]}
    assert "not an image" in reasons["Coat/notes.png"] and "1x1" in reasons["Shirt/tiny.png"]
    assert c["counters"]["images_read"] == N_IMAGES and c["counters"]["images_bad"] == 3
    assert len(c["slices"]) == 10 and sum(s["n"] for s in c["slices"]) == N_IMAGES
    assert json.loads((tmp_path / "beam.json").read_text())["catalog"]["images"] == N_IMAGES + 3


def test_catalog_drift_gates_and_errors(tiny_rgb, catalog: Path, tmp_path: Path) -> None:
    ref, cand = str(tiny_rgb["f32"]), str(tiny_rgb["int8"])
    few = tmp_path / "few"
    for cls in ("Bag", "Coat"):
        (few / cls).mkdir(parents=True)
        for f in sorted((catalog / cls).glob("0*.png"))[:29]:
            (few / cls / f.name).write_bytes(f.read_bytes())
    for bad in ("Bag/truncated.png", "Coat/notes.png"):
        (few / bad).write_bytes((catalog / bad).read_bytes())
    # 2 bad of 60: more than --max-bad 1 %: the gate fails, exit 1, one line naming the share
    p = _beam(
        "drift", ref, cand, "--data", str(few), "--runner", "direct", "--workers", "1", "--max-bad", "1"
    )
    assert p.returncode == 1, p.stderr
    assert p.stderr.startswith("error: drift gate failed") and "could not be used > --max-bad 1 %" in p.stderr
    p = _beam(
        "drift", ref, cand, "--data", str(few), "--runner", "direct", "--workers", "1", "--max-bad", "5"
    )
    assert p.returncode == 0, p.stderr
    for args, needle in (
        ([ref, cand, "--data", str(tmp_path / "nothing")], "does not exist"),
        ([str(tmp_path / "missing.tflite"), cand, "--data", str(few)], "does not exist"),
        ([ref, cand, "--data", str(few), "--workers", "1", "--runner", "dask"], "DaskRunner loses data"),
    ):
        p = _beam("drift", *args[:4], "--runner", "direct", *args[4:])
        assert p.returncode == 2, (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert lines[0].startswith("error: ") and needle in lines[0] and "Traceback" not in p.stderr


def test_beam_index_equals_the_in_process_index(tmp_path: Path) -> None:
    """The same catalog embedded on Beam and in one process: the same vectors, the same top-10."""
    from shoplens_convert.options import ConvertOptions
    from shoplens_convert.pipeline import convert

    res = convert(
        ROOT / "sample_apps" / "reference_model" / "product_cnn.keras",
        ConvertOptions(recipe="int8", calib_data="fashion-mnist:train:100", embedding="auto", latency_runs=0),
    )
    res.save(tmp_path / "model")
    emb = str(tmp_path / "model" / "embedding.tflite")
    assert _beam("data", "catalog", "--out", str(tmp_path / "cat"), "--count", "800").returncode == 0
    (tmp_path / "cat" / "images" / "000005.png").write_bytes(b"broken")
    beam = _beam(
        "index",
        "build",
        str(tmp_path / "cat" / "products.csv"),
        "-m",
        emb,
        "-o",
        str(tmp_path / "ib"),
        "--runner",
        "direct",
        "--workers",
        "2",
        "--json",
    )
    assert beam.returncode == 0, beam.stderr
    here = _beam(
        "index", "build", str(tmp_path / "cat" / "products.csv"), "-m", emb, "-o", str(tmp_path / "ih")
    )
    assert here.returncode == 0, here.stderr
    m = json.loads(beam.stdout)
    assert m["count"] == 799 and m["skipped"] == 1 and m["skipped_images"][0]["id"].endswith("00005")
    script = r"""
import sys, json
from shoplens import CatalogIndex
a, b = CatalogIndex.load(sys.argv[1]), CatalogIndex.load(sys.argv[2])
same = 0
for q in range(100):
    v = b.vectors([q])[0]
    same += [h.product.id for h in a.search(v, 10)] == [h.product.id for h in b.search(v, 10)]
ids = lambda idx: sorted(p.id for _, p in idx.products())
print(json.dumps({"same": same, "ids": ids(a) == ids(b)}))
"""
    out = subprocess.run(
        [str(BEAM_PY), "-c", script, str(tmp_path / "ib"), str(tmp_path / "ih")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=True,
    )
    assert json.loads(out.stdout) == {"same": 100, "ids": True}
    # `shoplens search` opens the Beam-built index unchanged
    q = _beam("search", str(tmp_path / "ib"), str(tmp_path / "cat" / "images" / "000001.png"), "--json")
    assert q.returncode == 0 and len(json.loads(q.stdout)["results"]) == 10, q.stderr


WORKER = r"""
import json, sys
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler
from shoplens.beam import LiteRTModelHandler
try:
    import tensorflow  # noqa: F401
    has_tf = True
except ImportError:
    has_tf = False
inner = LiteRTModelHandler(sys.argv[1], max_batch_size=8)
h = KeyedModelHandler(inner)
model = h.load_model()
imgs = [np.full((40, 40, 3), v, np.uint8) for v in (0, 128, 255)]
preds = list(h.run_inference([(f"id{i}", img) for i, img in enumerate(imgs)], model))
print(json.dumps({"has_tf": has_tf, "tf_loaded": "tensorflow" in sys.modules, "keys": [k for k, _ in preds],
                  "sums": [round(float(p.inference.sum()), 4) for _, p in preds],
                  "batching": h.batch_elements_kwargs(), "bytes": inner.get_num_bytes(imgs)}))
"""


def test_the_worker_side_runs_without_tensorflow(tiny_rgb) -> None:
    """In a fresh interpreter with only the runtime and Beam importable (the Beam venv)."""
    out = subprocess.run(
        [str(_beam_venv()), "-c", WORKER, str(tiny_rgb["int8"])],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout.strip().splitlines()[-1])
    assert d["has_tf"] is False and d["tf_loaded"] is False
    assert d["keys"] == ["id0", "id1", "id2"] and all(abs(s - 1.0) < 0.02 for s in d["sums"])  # probabilities
    assert d["batching"] == {"min_batch_size": 1, "max_batch_size": 8} and d["bytes"] == 3 * 40 * 40 * 3


def test_import_shoplens_in_the_beam_venv_loads_no_beam() -> None:
    code = (
        "import sys, shoplens; shoplens.Classifier; shoplens.CatalogIndex; "
        "print('apache_beam' in sys.modules)"
    )
    out = subprocess.run(
        [str(_beam_venv()), "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False"
