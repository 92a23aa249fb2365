"""``shoplens drift``: real converted models, a real on-device pipeline with the classic bugs, and
the CLI's gate, reports and bad-input handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from device_pipeline import device_scores, write_outputs

from conftest import ARTIFACTS, one_line_error, run_cli
from shoplens.data.spec import open_dataset
from shoplens.drift import DeviceOutputs, TFLiteDriftModel, open_model, paired_bootstrap_ci, run_drift
from shoplens.errors import DependencyError


def _frames(spec: str):
    for batch in open_dataset(spec).batches(64):
        yield from zip(batch.ids, batch.images, strict=True)


@pytest.fixture(scope="module")
def kiosk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
    from shoplens.data.kiosk import generate_kiosk

    x, y = load_fashion_mnist("test")
    out = tmp_path_factory.mktemp("kiosk") / "frames"
    generate_kiosk(out, x[:300], y[:300].tolist(), FASHION_MNIST_LABELS, n_frames=200, seed=3)
    return out


def _drift_with_device(model: Path, spec: str, tmp_path: Path, **bug) -> dict:
    ref = TFLiteDriftModel(model)
    size = ref.contract.width
    scores = device_scores(model, _frames(spec), size=size, **bug)
    outputs = DeviceOutputs.load(write_outputs(tmp_path / "device.json", scores))
    report = run_drift(ref, outputs, open_dataset(spec), cause_sample=300)
    ref.close()
    return report.to_dict()


def test_correct_device_pipeline_agrees(color_catalog, tmp_path: Path) -> None:
    d = _drift_with_device(color_catalog["int8"], str(color_catalog["test"]), tmp_path)
    assert d["agreement"] >= 0.99, d["agreement"]
    assert d["abs_score_delta_max"] < 0.05
    assert d["likely_cause"].startswith("none needed")
    assert d["cause_analysis"]["alternatives"] == []  # not run when the candidate agrees


def test_swapped_channel_order_is_named(color_catalog, tmp_path: Path, browser) -> None:
    d = _drift_with_device(color_catalog["int8"], str(color_catalog["test"]), tmp_path, feed_bgr=True)
    assert d["agreement"] < 0.9
    assert d["cause_analysis"]["best"] == "color_order=BGR"
    assert "the device probably feeds BGR" in d["likely_cause"], d["likely_cause"]
    best = d["cause_analysis"]["alternatives"][0]
    assert best["agreement"] >= 0.98
    # the HTML report, looked at in a real browser
    from shoplens.drift.html import disagreeing_thumbnails, render_html

    d["gate"] = {"passed": False, "failures": ["agreement below 99 %"]}
    page_path = tmp_path / "drift.html"
    thumbs = disagreeing_thumbnails(open_dataset(str(color_catalog["test"])), d["disagreeing_ids"])
    assert len(thumbs) == min(24, d["disagreeing_total"]) > 0
    page_path.write_text(render_html(d, thumbs))
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.goto(page_path.as_uri())
        assert page.inner_text("#verdict").startswith("FAIL")
        assert "feeds BGR" in page.inner_text("#likely-cause")
        maps = page.locator("svg.heatmap")
        assert maps.count() == 2
        for i in range(2):
            box = maps.nth(i).bounding_box()
            assert box and box["width"] > 300 and box["height"] > 300
            assert maps.nth(i).locator("rect").count() == 100
        assert page.locator("svg.bars rect").count() == 10
        shown = page.eval_on_selector_all("#thumbnails img", "els => els.map(e => e.naturalWidth)")
        assert len(shown) == len(thumbs) and all(w > 0 for w in shown)  # the images decode in a browser
        assert "limits: none given; a collapse fails" in page.inner_text("#limits")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "drift_report_bgr.png"), full_page=True)
    finally:
        page.close()


@pytest.mark.parametrize(("rng", "key"), [((-1.0, 1.0), "range=[-1, 1]"), ((0.0, 255.0), "range=[0, 255]")])
def test_wrong_normalization_is_named(color_catalog, tmp_path: Path, rng, key) -> None:
    d = _drift_with_device(color_catalog["f32"], str(color_catalog["test"]), tmp_path, value_range=rng)
    # [0, 255] into this ReLU net keeps 99 % of the argmaxes but not the scores: KL still shows it
    assert d["agreement"] < 0.97 or d["kl_mean"] > 0.1
    assert d["cause_analysis"]["best"] == key, d["cause_analysis"]
    assert "normalizes pixels to" in d["likely_cause"]


@pytest.mark.parametrize(("bug", "key"), [({"interpolation": "nearest"}, "interpolation=nearest"),
                                          ({"crop": "stretch"}, "crop=stretch")])  # fmt: skip
def test_resize_and_crop_mistakes_are_named(tiny_rgb, kiosk_dir: Path, tmp_path: Path, bug, key) -> None:
    d = _drift_with_device(tiny_rgb["int8"], f"kiosk:{kiosk_dir}", tmp_path, **bug)
    assert d["agreement"] < 0.97
    assert d["cause_analysis"]["best"] == key, d["cause_analysis"]["alternatives"][:3]


def test_collapsed_int8_model_is_named(tiny_keras_model, tmp_path: Path) -> None:
    """Calibrating on all-black frames (a loader bug) collapses the int8 model: drift says so."""
    from shoplens.contract import PreprocessContract
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS
    from shoplens_convert.load import load_keras_model
    from shoplens_convert.metadata import embed_shoplens_metadata, shoplens_metadata_dict
    from shoplens_convert.quantize import quantize

    contract = PreprocessContract.load(tiny_keras_model.parent / "contract.json")
    tfl = quantize(
        load_keras_model(tiny_keras_model).model, "int8", calibration=np.zeros((50, 28, 28, 1), np.float32)
    )
    cand = tmp_path / "collapsed.tflite"
    cand.write_bytes(embed_shoplens_metadata(tfl, shoplens_metadata_dict(contract, FASHION_MNIST_LABELS)))
    from shoplens_convert.drift_model import KerasDriftModel

    with pytest.raises(DependencyError, match="needs the converter"):  # the runtime alone cannot
        open_model(tiny_keras_model)
    ref = open_model(tiny_keras_model, keras_opener=KerasDriftModel)
    report = run_drift(ref, open_model(cand), open_dataset("fashion-mnist:test:500"), cause_sample=200)
    assert report.collapsed
    assert report.check_gate(max_drop=1.0)
    failures = report.check_gate()  # no limits given: a collapsed candidate still fails
    assert len(failures) == 1 and "collapsed" in failures[0] and not report.gate["passed"]
    assert report.check_gate(allow_collapse=True) == []
    assert "collapsed to a near-constant output" in report.likely_cause()
    assert report.drop > 30
    # the CLI: exit 1, one line naming each failed limit, by how much, and the cause
    p = run_cli("drift", str(tiny_keras_model), str(cand), "--data", "fashion-mnist:test:300",
                "--max-drop", "1",
                "--min-agreement", "99", "--max-class-drop", "5")  # fmt: skip
    one_line_error(p, 1, "top-1 drop")
    for needle in ("> --max-drop 1 (by", "< --min-agreement 99 %", "> --max-class-drop 5", "collapsed"):
        assert needle in p.stderr, p.stderr
    assert "gate failed" in p.stdout
    # no limits given on the command line: the collapse alone fails the gate, --allow-collapse passes
    args = ("drift", str(tiny_keras_model), str(cand), "--data", "fashion-mnist:test:300")
    p = run_cli(*args)
    one_line_error(p, 1, "collapsed")
    assert "gate failed" in p.stdout and "gate passed" not in p.stdout
    p = run_cli(*args, "--allow-collapse")
    assert p.returncode == 0, p.stderr


def test_paired_bootstrap_ci_brackets_the_drop() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random(5000) < 0.9
    cand = ref.copy()
    cand[rng.choice(5000, 100, replace=False)] = False  # about 1.8 pts worse
    lo, hi = paired_bootstrap_ci(ref, cand)
    drop = 100 * (ref.mean() - cand.mean())
    assert lo < drop < hi and hi - lo < 1.5 and lo > 0
    assert paired_bootstrap_ci(ref, ref) == (0.0, 0.0)


def test_cli_gate_json_and_html(color_catalog, tmp_path: Path) -> None:
    ref, cand = color_catalog["keras"], color_catalog["int8"]
    html = tmp_path / "r.html"
    p = run_cli("drift", str(ref), str(cand), "--data", str(color_catalog["test"]), "--max-drop", "2",
                "--min-agreement", "95", "--html", str(html), "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["gate"]["passed"] and d["n"] == 300
    assert set(d) >= {"reference_top5", "kl_mean", "per_class", "reference_confusion", "disagreeing_ids"}
    assert sum(map(sum, d["candidate_confusion"])) == 300
    assert d["per_class"][0]["delta_pts"] >= d["per_class"][-1]["delta_pts"]  # worst first
    page = html.read_text()
    assert page.count("<svg") == 3 and 'id="metrics"' in page and "<script" not in page
    # the verdict names the limits it applied; the disagreeing images are shown, not only listed
    assert "(limits: top-1 drop &lt;= 2 pts, agreement &gt;= 95 %; a collapse fails)" in page
    assert page.count('<img src="data:image/png;base64,') == min(24, d["disagreeing_total"])
    # the report is not overwritten without --overwrite
    one_line_error(run_cli("drift", str(ref), str(cand), "--data", str(color_catalog["test"]), "--html",
                           str(html)), 2, "already exists")  # fmt: skip


@pytest.fixture(scope="module")
def bundle_dir(tiny_rgb, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shoplens.bundle_writer import write_bundle

    out = tmp_path_factory.mktemp("drift_bundle") / "bundle"
    write_bundle(tiny_rgb["int8"], out, frames=24)
    return out


def _bundle_frames(bundle: Path):
    import cv2

    for row in json.loads((bundle / "expected.json").read_text())["frames"]:
        yield row["frame"], cv2.imread(str(bundle / row["frame"]), cv2.IMREAD_COLOR)


def test_bundle_device_outputs_pass_and_fail(bundle_dir: Path, tmp_path: Path) -> None:
    good = device_scores(bundle_dir / "model.tflite", _bundle_frames(bundle_dir), size=32)
    f = write_outputs(tmp_path / "good.json", good)
    p = run_cli("drift", "--bundle", str(bundle_dir), "--device-outputs", str(f), "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert len(d["per_frame"]) == 24 and all(fr["ok"] for fr in d["per_frame"])
    # the same as CSV, columns named by label
    labels = (bundle_dir / "labels.txt").read_text().splitlines()
    csv_path = tmp_path / "good.csv"
    lines = ["id," + ",".join(labels)] + [k + "," + ",".join(map(str, v)) for k, v in good.items()]
    csv_path.write_text("\n".join(lines) + "\n")
    assert run_cli("drift", "--bundle", str(bundle_dir), "--device-outputs", str(csv_path)).returncode == 0
    # a device that resizes with nearest neighbour: exit 1, frames listed, cause named
    bad = device_scores(
        bundle_dir / "model.tflite", _bundle_frames(bundle_dir), size=32, interpolation="nearest"
    )
    f = write_outputs(tmp_path / "bad.json", bad)
    p = run_cli("drift", "--bundle", str(bundle_dir), "--device-outputs", str(f), "--json")
    one_line_error(p, 1, "frames differ")
    d = json.loads(p.stdout)
    assert d["cause_analysis"]["best"] == "interpolation=nearest", d["cause_analysis"]["alternatives"][:3]
    assert "nearest interpolation" in p.stderr


def test_bundle_bad_inputs_exit_2(bundle_dir: Path, tmp_path: Path, tiny_rgb) -> None:
    import shutil

    good = device_scores(bundle_dir / "model.tflite", _bundle_frames(bundle_dir), size=32)
    ids = list(good)
    fewer = write_outputs(tmp_path / "fewer.json", {k: good[k] for k in ids[:-1]})
    one_line_error(run_cli("drift", "--bundle", str(bundle_dir), "--device-outputs", str(fewer)), 2,
                   "hold 23 frames")  # fmt: skip
    renamed = write_outputs(
        tmp_path / "renamed.json", {**{k: good[k] for k in ids[:-1]}, "frames/999.png": good[ids[-1]]}
    )
    one_line_error(
        run_cli("drift", "--bundle", str(bundle_dir), "--device-outputs", str(renamed)), 2, "missing 1"
    )
    classes = write_outputs(tmp_path / "classes.json", {k: v[:9] for k, v in good.items()})
    one_line_error(run_cli("drift", "--bundle", str(bundle_dir), "--device-outputs", str(classes)), 2,
                   "9 scores per frame")  # fmt: skip
    labels = (bundle_dir / "labels.txt").read_text().splitlines()
    other = write_outputs(tmp_path / "labels.json", good, labels=[*labels[:-1], "Handbag"])
    one_line_error(
        run_cli("drift", "--bundle", str(bundle_dir), "--device-outputs", str(other)), 2, "label set"
    )
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle_dir, tampered)
    (tampered / "frames" / "003.png").write_bytes(b"\x89PNG garbage")
    f = write_outputs(tmp_path / "good.json", good)
    one_line_error(run_cli("drift", "--bundle", str(tampered), "--device-outputs", str(f)), 2, "sha256")
    (tampered / "frames" / "003.png").unlink()
    one_line_error(
        run_cli("drift", "--bundle", str(tampered), "--device-outputs", str(f)), 2, "missing frames/003.png"
    )
    one_line_error(run_cli("drift", "--bundle", str(bundle_dir)), 2, "--device-outputs")
    (tmp_path / "junk.json").write_text("{not json")
    junk = tmp_path / "junk.json"
    one_line_error(run_cli("drift", "--bundle", str(bundle_dir), "--device-outputs", str(junk)),
                   2, "not valid JSON")  # fmt: skip


def test_label_sets_must_match(tiny_rgb, color_catalog, tmp_path: Path) -> None:
    from shoplens.contract import PreprocessContract
    from shoplens_convert.metadata import embed_shoplens_metadata, shoplens_metadata_dict

    contract = PreprocessContract.from_range(32, 32, 0.0, 1.0, color_order="RGB")
    names = [f"sku-{i}" for i in range(10)]
    raw = tiny_rgb["nometa"].read_bytes()
    other = tmp_path / "other_labels.tflite"
    other.write_bytes(embed_shoplens_metadata(raw, shoplens_metadata_dict(contract, names)))
    one_line_error(run_cli("drift", str(tiny_rgb["int8"]), str(other), "--data", "fashion-mnist:test:50"), 2,
                   "different label sets")  # fmt: skip
    one_line_error(run_cli("drift", str(tiny_rgb["int8"]), str(tmp_path / "nope.tflite"), "--data",
                           "fashion-mnist:test:50"), 2, "does not exist")  # fmt: skip
    one_line_error(run_cli("drift", str(tiny_rgb["int8"]), str(tiny_rgb["f32"])), 2, "--data is required")
