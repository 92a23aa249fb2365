"""Open-set answers ("no product recognised") on the released reference model, with real frames."""

from __future__ import annotations

import dataclasses
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
    OpenSetProfile,
    Product,
    QualityOptions,
    QualityPolicy,
    index_from_vectors,
)
from shoplens.data.kiosk import KioskConfig, iter_kiosk_frames
from shoplens.errors import DataError, ShopLensError, UsageError
from shoplens.open_set import PROFILE_NAME, REFERENCE

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


# -- the open-set profile (Mahalanobis distance to the nearest class) ------------------------------
PROFILE = RELEASE / PROFILE_NAME


def test_profile_round_trip_and_its_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(900, 16)) + np.repeat(np.eye(16)[:3] * 5, 300, axis=0)
    prof = OpenSetProfile.fit(x, np.repeat([0, 1, 2], 300), frr=0.05)
    held = x[np.arange(900) % 3 == 0]  # the frames the threshold was read on: 5 % beyond it
    assert np.mean(prof.distance(held) > prof.max_distance) == pytest.approx(0.05, abs=0.01)
    path = prof.save(tmp_path / "p.npz")
    back = OpenSetProfile.load(path)
    assert back.dim == 16 and back.frr == 0.05 and back.max_distance == prof.max_distance
    assert np.allclose(back.distance(x[:50]), prof.distance(x[:50]), rtol=1e-4)
    before = path.read_bytes()
    with pytest.raises(ShopLensError, match="already exists"):
        prof.save(path)  # never overwrites by surprise
    assert path.read_bytes() == before
    with pytest.raises(DataError, match="at least 30"):
        OpenSetProfile.fit(x[:10], np.zeros(10))


def test_bad_profiles_are_refused(tmp_path: Path) -> None:
    good = PROFILE.read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.npz").write_text("not a profile")
    np.savez(tmp_path / "other.npz", means=np.zeros((2, 4)))
    cases = [("missing.npz", "does not exist"), ("cut.npz", "cannot be read"), ("text.npz", "cannot be read"),
             ("other.npz", "not a ShopLens open-set profile")]  # fmt: skip
    for name, needle in cases:
        with pytest.raises(DataError, match=needle):
            OpenSetOptions(profile=tmp_path / name)
    small = OpenSetProfile.fit(np.random.default_rng(1).normal(size=(60, 8)), np.arange(60) % 2)
    with pytest.raises(UsageError, match="8-dim embeddings"):
        Embedder.create_from_model_path(RELEASE / "embedding.tflite", open_set=OpenSetOptions(profile=small))
    release = OpenSetProfile.load(PROFILE)
    assert len(release.model_sha256) == 64  # the release's names its embedding model
    stale = OpenSetOptions(profile=dataclasses.replace(release, model_sha256="0" * 64))
    with pytest.raises(UsageError, match="fitted for another embedding model"):
        Embedder.create_from_model_path(RELEASE / "embedding.tflite", open_set=stale)
    with pytest.raises(UsageError, match="give it to the Embedder"):
        Classifier.create_from_model_path(RELEASE / "model.tflite", open_set=OpenSetOptions(profile=PROFILE))


def test_release_profile_passes_products_and_rejects_noise(fmnist_test) -> None:
    """The reference embedding model's profile, on kiosk frames of test products and noise frames."""
    x, y = fmnist_test
    frames = [f for f, _, _ in iter_kiosk_frames(x, y, 80, seed=8, config=KioskConfig(bad_fraction=0.0))]
    noise = [np.random.default_rng(i).integers(0, 256, (224, 224, 3), dtype=np.uint8) for i in range(30)]
    opts = OpenSetOptions(profile=PROFILE)
    with Embedder.create_from_model_path(RELEASE / "embedding.tflite", quality=GATE, open_set=opts) as emb:
        vecs = [r.embedding for r in (emb.embed(f) for f in frames) if not r.rejected]
        judged = [emb.is_product(embedding=v) for v in vecs]
        assert len(judged) >= 60 and np.mean(judged) >= 0.95, judged  # calibrated: ~2 % turned away
        kept = [r.embedding for r in (emb.embed(f) for f in noise) if not r.rejected]
        assert len(kept) >= 5 and np.mean([emb.is_product(embedding=v) is False for v in kept]) >= 0.9
        assert emb.is_product([]) is None  # no embedding given and no min_similarity: nothing judged


def test_cli_search_open_set_profile(fmnist_test, tmp_path: Path) -> None:
    import cv2

    x, y = fmnist_test
    frames = [f for f, _, _ in iter_kiosk_frames(x, y, 40, seed=6, config=KioskConfig(bad_fraction=0.0))]
    with Embedder.create_from_model_path(RELEASE / "embedding.tflite") as emb:
        vecs = np.stack([emb.embed(f).embedding for f in frames])
    products = [Product(f"SL-{i}", f"{i}.png", str(y[i])) for i in range(40)]
    index_from_vectors(vecs, products, tmp_path / "index", model=RELEASE / "embedding.tflite")
    noise, item = tmp_path / "noise.png", tmp_path / "item.png"
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    cv2.imwrite(str(item), frames[0])
    base = ["search", str(tmp_path / "index"), "--open-set-profile", str(PROFILE), "--json"]
    p = run_cli(*base[:2], str(noise), *base[2:])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["is_product"] is False and not json.loads(p.stdout)["results"]
    p = run_cli(*base[:2], str(item), *base[2:])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["is_product"] is True and json.loads(p.stdout)["results"]
    (tmp_path / "cut.npz").write_bytes(PROFILE.read_bytes()[:1000])
    p = run_cli("search", str(tmp_path / "index"), str(item), "--open-set-profile", str(tmp_path / "cut.npz"))
    one_line_error(p, 2, "cannot be read")


def test_snap_search_uses_the_profile_beside_the_embedding_model(fmnist_test, tmp_path: Path) -> None:
    """sample_apps/snap_search with the release models: its open_set_profile.npz decides by default."""
    import subprocess
    import sys

    import cv2

    x, _ = fmnist_test
    noise, item = tmp_path / "noise.png", tmp_path / "item.png"
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    cv2.imwrite(str(item), cv2.resize(x[2], (224, 224), interpolation=cv2.INTER_CUBIC))  # a trouser
    snap = RELEASE.parents[1] / "snap_search" / "app.py"
    cmd = [sys.executable, str(snap), "--models", str(RELEASE), "--work", str(tmp_path / "w"),
           "--catalog-size", "300", "--json"]  # fmt: skip
    runs = {name: subprocess.run([*cmd, str(p)], capture_output=True, text=True, timeout=300)
            for name, p in (("noise", noise), ("item", item))}  # fmt: skip
    doc = json.loads(runs["noise"].stdout)
    assert runs["noise"].returncode == 3 and doc["not_a_product"] and doc["quality"]["ok"], runs["noise"]
    assert doc["open_set"] == {"profile": str(PROFILE), "min_score": None, "min_similarity": None}
    assert runs["item"].returncode == 0 and json.loads(runs["item"].stdout)["category"] == "Trouser"
    bad = subprocess.run([*cmd, "--open-set-profile", str(tmp_path / "none.npz"), str(item)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("error: open-set profile"), bad.stderr
    assert "does not exist" in bad.stderr
