"""Open-set answers ("no product recognised") on the released reference model, with real frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import one_line_error, run_cli
from shoplens import (
    CatalogIndex,
    Classifier,
    Embedder,
    OpenSetOptions,
    Product,
    QualityOptions,
    QualityPolicy,
    index_from_vectors,
)
from shoplens.data.kiosk import KioskConfig, iter_kiosk_frames
from shoplens.errors import UsageError
from shoplens.open_set import REFERENCE

RELEASE = Path(__file__).resolve().parents[1] / "sample_apps" / "reference_model" / "release"
KIOSK = Path(__file__).resolve().parents[1] / "sample_apps" / "kiosk" / "app.py"
GATE = QualityOptions(policy=QualityPolicy.REJECT)


@pytest.mark.parametrize(
    "kw", [{"min_score": 1.5}, {"min_score": -0.1}, {"min_similarity": 2.0}, {"min_score": float("nan")},
           {"min_score": True}, {"min_similarity": "0.9"}],
)
def test_thresholds_out_of_range_are_refused(kw: dict) -> None:
    with pytest.raises(UsageError, match="open-set min_"):
        OpenSetOptions(**kw)


def test_judge() -> None:
    both = OpenSetOptions(min_score=0.4, min_similarity=0.9)
    assert both.judge(score=0.5, similarity=0.95) is True
    assert both.judge(score=0.3, similarity=0.95) is False
    assert both.judge(score=0.5, similarity=0.85) is False
    assert both.judge(score=0.5) is True  # no search ran: the score alone
    assert OpenSetOptions().judge(score=0.1, similarity=0.1) is None and not OpenSetOptions().enabled


def test_products_pass_and_noise_is_not_a_product(fmnist_test) -> None:
    x, y = fmnist_test
    frames = [f for f, _, _ in iter_kiosk_frames(x, y, 60, seed=4, config=KioskConfig(bad_fraction=0.0))]
    noise = [np.random.default_rng(i).integers(0, 256, (224, 224, 3), dtype=np.uint8) for i in range(30)]
    with Classifier.create_from_model_path(RELEASE / "model.tflite", quality=GATE, open_set=REFERENCE) as clf:
        products = [clf.classify(f) for f in frames]
        judged = [r.is_product for r in products if not r.rejected]
        assert len(judged) >= 50 and np.mean(judged) >= 0.95, judged  # calibrated: ~1 % turned away
        passed = [r for r in (clf.classify(f) for f in noise) if not r.rejected]
        assert len(passed) >= 5 and all(r.is_product is False for r in passed), [r.top for r in passed]
        assert passed[0].to_dict()["is_product"] is False and passed[0].top is not None  # the guess is kept
        assert all(r.is_product is None for r in (clf.classify(f) for f in noise) if r.rejected)
    with Classifier.create_from_model_path(RELEASE / "model.tflite") as plain:
        assert plain.classify(noise[0]).is_product is None  # off by default


def test_embedder_judges_the_nearest_catalog_product(fmnist_test, tmp_path: Path) -> None:
    x, y = fmnist_test
    frames = [f for f, _, _ in iter_kiosk_frames(x, y, 40, seed=6, config=KioskConfig(bad_fraction=0.0))]
    with Embedder.create_from_model_path(RELEASE / "embedding.tflite", open_set=REFERENCE) as emb:
        vecs = np.stack([emb.embed(f).embedding for f in frames])
        products = [Product(f"SL-{i}", f"{i}.png", str(y[i])) for i in range(30)]
        index_from_vectors(vecs[:30], products, tmp_path / "index", model=RELEASE / "embedding.tflite")
        index = CatalogIndex.load(tmp_path / "index")
        assert emb.is_product(index.search(vecs[0], 1)) is True  # a catalog product itself
        assert emb.is_product([]) is False  # nothing found: no product
    with Embedder.create_from_model_path(RELEASE / "embedding.tflite") as plain:
        assert plain.is_product(index.search(vecs[0], 1)) is None


def test_cli_classify_min_score(tmp_path: Path) -> None:
    import cv2

    noise = tmp_path / "noise.png"  # passes the gate; top-1 about 0.24
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    model = str(RELEASE / "model.tflite")
    p = run_cli("classify", model, str(noise), "--min-score", str(REFERENCE.min_score), "--json")
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert p.returncode == 0 and rows[0]["is_product"] is False and rows[-1]["summary"]["not_a_product"] == 1
    p = run_cli("classify", model, str(noise), "--min-score", str(REFERENCE.min_score))
    assert p.returncode == 0 and "no product recognised (best guess" in p.stdout, p.stdout
    off = run_cli("classify", model, str(noise), "--json").stdout.splitlines()[0]
    assert json.loads(off)["is_product"] is None
    one_line_error(run_cli("classify", model, str(noise), "--min-score", "2"), 2, "open-set min_score")


def test_kiosk_shows_not_a_product_and_keeps_the_last_item(fmnist_test) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("kiosk_app", KIOSK)
    assert spec is not None and spec.loader is not None
    kiosk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kiosk)
    noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    opts = {"quality": GATE, "open_set": OpenSetOptions(min_score=kiosk.parse_args([]).min_score)}
    with Classifier.create_from_model_path(RELEASE / "model.tflite", **opts) as clf:
        last = {"label": "Dress", "score": 0.97}
        s = kiosk.answer_state(clf.classify(noise), 0.85, last)
    assert s["answer"] == "not_a_product" and s["prompt"].startswith("no product recognised")
    assert s["label"] is None and s["top3"] == [] and s["last_item"] == last
