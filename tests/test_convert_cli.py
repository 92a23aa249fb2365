"""``shoplens convert`` end to end in subprocesses: outputs, report, guard, bad input."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import one_line_error, run_cli
from shoplens.contract import PreprocessContract
from shoplens.tflite_model import read_model_info

CAL = ("--calib-data", "fashion-mnist:train:200")


def _no_partial_outputs(out: Path) -> None:
    if out.exists():
        leftovers = [p.name for p in out.iterdir() if p.name not in ("report.json", "report.md")]
        assert leftovers == [], leftovers


def test_convert_int8_writes_model_labels_and_report(tiny_rgb, tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = run_cli("convert", str(tiny_rgb["keras"]), "--out", str(out), *CAL,
                "--eval-data", "fashion-mnist:test:400", "--max-drop", "3", "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)  # --json prints only the report
    assert sorted(x.name for x in out.iterdir()) == ["labels.txt", "model.tflite", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text()) == report
    assert report["status"]["accepted"] and report["recipe"]["chosen"] == "int8"
    assert (
        report["source"]["output"] == "probabilities" and "softmax" in report["source"]["output_detected_by"]
    )
    acc = report["accuracy"]
    assert acc["n"] == 400 and acc["converted_top1"] > 0.6
    lo, hi = acc["drop_ci95_pts"]
    assert lo <= acc["drop_pts"] <= hi
    s = report["sizes"]
    assert s["model_bytes"] == (out / "model.tflite").stat().st_size and s["ratio_to_float32"] < 0.6
    assert report["tflite"]["inputs"][0]["dtype"] == "uint8" and "scale" in report["tflite"]["inputs"][0]
    assert report["tflite"]["op_histogram"]["CONV_2D"] == 2
    assert report["latency"]["end_to_end_p50"] > 0 and report["latency"]["threads"] == 1
    assert report["tools"]["tensorflow"].startswith("2.21") and len(report["source"]["sha256"]) == 64
    info = read_model_info(out / "model.tflite")
    assert info.shoplens_metadata["labels"][0] == "T-shirt/top"
    assert info.associated_files["labels.txt"].decode().splitlines()[9] == "Ankle boot"
    assert "TFLITE_METADATA" in info.metadata
    md = (out / "report.md").read_text()
    assert "ACCEPTED" in md and "95 % CI" in md
    # outputs exist now: a second run refuses unless --overwrite
    again = run_cli("convert", str(tiny_rgb["keras"]), "--out", str(out), *CAL)
    one_line_error(again, 2, "--overwrite")
    assert (
        run_cli("convert", str(tiny_rgb["keras"]), "--out", str(out), *CAL, "--overwrite", "-q").returncode
        == 0
    )


def test_guard_failure_writes_report_but_no_model(tiny_rgb, tmp_path: Path) -> None:
    """One dark calibration image clips every activation range: the drop blows the budget."""
    cal = tmp_path / "cal" / "a"
    cal.mkdir(parents=True)
    import cv2

    cv2.imwrite(str(cal / "dark.png"), np.full((32, 32, 3), 3, np.uint8))
    out = tmp_path / "out"
    p = run_cli("convert", str(tiny_rgb["keras"]), "--out", str(out), "--calib-data", str(cal.parent),
                "--calib-count", "1", "--eval-data", "fashion-mnist:test:300", "--max-drop", "1")  # fmt: skip
    one_line_error(p, 1, "exceeds --max-drop 1 pt")
    assert sorted(x.name for x in out.iterdir()) == ["report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    assert report["status"]["accepted"] is False and report["accuracy"]["drop_pts"] > 1
    assert "REJECTED" in (out / "report.md").read_text()
    # within any drop budget, the agreement limit alone rejects it
    p = run_cli("convert", str(tiny_rgb["keras"]), "--out", str(out), "--calib-data", str(cal.parent),
                "--calib-count", "1", "--eval-data", "fashion-mnist:test:300", "--max-drop", "100",
                "--min-agreement", "99", "--overwrite")  # fmt: skip
    one_line_error(p, 1, "is below --min-agreement 99 %")
    assert sorted(x.name for x in out.iterdir()) == ["report.json", "report.md"]
    assert json.loads((out / "report.json").read_text())["accuracy"]["min_agreement_pct"] == 99


def test_auto_recipe_explains_its_choice(tiny_rgb, tmp_path: Path) -> None:
    cal = tmp_path / "cal" / "a"
    cal.mkdir(parents=True)
    import cv2

    cv2.imwrite(str(cal / "dark.png"), np.full((32, 32, 3), 3, np.uint8))
    out = tmp_path / "auto"
    p = run_cli("convert", str(tiny_rgb["keras"]), "--out", str(out), "--recipe", "auto",
                "--calib-data", str(cal.parent), "--eval-data", "fashion-mnist:test:300",
                "--max-drop", "1", "--min-agreement", "95", "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    names = [t["candidate"] for t in r["auto_trials"]]
    assert names[0] == "int8" and not r["auto_trials"][0]["passed"]  # badly calibrated int8 fails
    assert r["auto_trials"][-1]["passed"] and all(not t["passed"] for t in r["auto_trials"][:-1])
    assert names[1].startswith("int8-fallback")  # float fallback was tried before dynamic
    assert r["fallback"]["ranking"]  # the per-layer error ranking is in the report
    assert r["status"]["accepted"] and r["accuracy"]["drop_pts"] <= 1
    assert r["accuracy"]["agreement"] >= 0.95 and all(
        t["passed"] == (t["drop_pts"] <= 1 and t["agreement"] >= 0.95) for t in r["auto_trials"]
    )


def test_bake_preprocessing_takes_raw_bgr_bytes(tiny_rgb, tmp_path: Path, fmnist_test) -> None:
    out = tmp_path / "baked"
    p = run_cli("convert", str(tiny_rgb["keras"]), "--out", str(out), *CAL, "--bake-preprocessing",
                "--bake-bgr", "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert "channel swap" in r["fold"]["reason"] and r["fold"]["max_output_difference"] < 1e-3
    t = r["tflite"]["inputs"][0]
    assert (
        t["dtype"] == "uint8"
        and t["scale"][0] == pytest.approx(1.0, abs=0.01)
        and abs(t["zero_point"][0]) <= 1
    )
    c = PreprocessContract.from_dict(read_model_info(out / "model.tflite").shoplens_metadata["contract"])
    assert c.color_order.value == "BGR" and c.mean == (0.0, 0.0, 0.0) and c.std == (1.0, 1.0, 1.0)
    # the SDK (reading the baked contract) agrees with the unbaked int8 model on real images
    from shoplens.classifier import Classifier

    x, _ = fmnist_test
    with (
        Classifier.create_from_model_path(out / "model.tflite") as baked,
        Classifier.create_from_model_path(tiny_rgb["int8"]) as plain,
    ):
        agree = np.mean([baked.classify(im).categories[0].index == plain.classify(im).categories[0].index
                         for im in x[:200]])  # fmt: skip
    assert agree >= 0.95


def test_logits_model_is_detected(tiny_rgb, tmp_path: Path) -> None:
    logits_keras = Path(tiny_rgb["logits"]).parent / "model.keras"
    p = run_cli("convert", str(logits_keras), "--out", str(tmp_path / "o"), "--recipe", "float16", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["source"]["output"] == "logits" and "linear" in r["source"]["output_detected_by"]
    assert read_model_info(tmp_path / "o" / "model.tflite").shoplens_metadata["output"] == "logits"


def test_custom_recipe_file_and_saved_model_source(tiny_rgb, tmp_path: Path) -> None:
    recipe = tmp_path / "mine.json"
    recipe.write_text(json.dumps({"name": "mine", "quantization": "dynamic", "description": "test"}))
    p = run_cli(
        "convert", str(tiny_rgb["keras"]), "--out", str(tmp_path / "r"), "--recipe", str(recipe), "--json"
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["recipe"]["name"] == "mine"
    # a plain TF SavedModel (Keras 3 model.export): post-training quantization works, pruning is refused
    import keras

    sm = tmp_path / "exported"
    keras.saving.load_model(tiny_rgb["keras"]).export(str(sm), verbose=False)
    shutil.copy(tiny_rgb["keras"].parent / "contract.json", tmp_path / "contract.json")
    shutil.copy(tiny_rgb["keras"].parent / "labels.txt", tmp_path / "labels.txt")
    p = run_cli("convert", str(sm), "--out", str(tmp_path / "sm"), *CAL,
                "--eval-data", "fashion-mnist:test:200", "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["source"]["format"] == "tf_saved_model" and r["accuracy"]["converted_top1"] > 0.6
    p = run_cli("convert", str(sm), "--out", str(tmp_path / "sm2"), "--prune", "0.5",
                "--train-data", "fashion-mnist:train:100")  # fmt: skip
    one_line_error(p, 2, "plain TF SavedModel")


def _two_inputs(tmp_path: Path) -> Path:
    import keras

    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    y = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(keras.layers.Add()([a, b])))
    p = tmp_path / "two.keras"
    keras.Model([a, b], y).save(p)
    return p


def _dynamic_hw(tmp_path: Path) -> Path:
    import keras

    a = keras.Input((None, None, 3))
    y = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(a))
    p = tmp_path / "dyn.keras"
    keras.Model(a, y).save(p)
    return p


def _not_classifier(tmp_path: Path) -> Path:
    import keras

    a = keras.Input((8, 8, 3))
    p = tmp_path / "seg.keras"
    keras.Model(a, keras.layers.Conv2D(2, 1)(a)).save(p)
    return p


@pytest.mark.parametrize(
    ("case", "code", "needle"),
    [
        ("missing", 2, "does not exist"),
        ("not_a_model", 2, "not a valid .keras archive"),
        ("corrupt_zip", 2, "corrupt or truncated"),
        ("two_inputs", 2, "2 inputs"),
        ("dynamic_hw", 2, "dynamic height or width"),
        ("not_classifier", 2, "a classifier needs one output"),
        ("labels_mismatch", 2, "lists 3 labels but the model predicts 10"),
        ("empty_calib", 2, "holds no images"),
        ("unreadable_calib", 2, "none of its 3 images could be read"),
        ("sparsity_high", 2, "between 0 and 1"),
        ("sparsity_zero", 2, "between 0 and 1"),
        ("unknown_recipe", 2, "unknown recipe 'int4'"),
        ("out_is_file", 2, "is a file"),
        ("out_is_input", 2, "would overwrite the input"),
        ("pqat_without_prune", 2, "add --prune"),
        ("edgetpu_float", 2, "full-integer recipe"),
        ("qat_targets", 2, "'teacher' is not one of 'source', 'labels'"),
        ("target", 2, "'tpu' is not one of 'cpu', 'edgetpu'"),
    ],
)
def test_bad_input(case: str, code: int, needle: str, tiny_rgb, tmp_path: Path) -> None:
    src = tiny_rgb["keras"]
    out = tmp_path / "out"
    extra: list[str] = [*CAL]
    model = str(src)
    if case == "missing":
        model = str(tmp_path / "nope.keras")
    elif case == "not_a_model":
        (tmp_path / "notes.keras").write_text("hello")
        model = str(tmp_path / "notes.keras")
    elif case == "corrupt_zip":
        data = src.read_bytes()
        (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
        model = str(tmp_path / "cut.keras")
    elif case in ("two_inputs", "dynamic_hw", "not_classifier"):
        build = {"two_inputs": _two_inputs, "dynamic_hw": _dynamic_hw, "not_classifier": _not_classifier}
        model = str(build[case](tmp_path))
    elif case == "labels_mismatch":
        (tmp_path / "l.txt").write_text("a\nb\nc\n")
        extra += ["--labels", str(tmp_path / "l.txt")]
    elif case == "empty_calib":
        (tmp_path / "empty" / "cls").mkdir(parents=True)
        extra = ["--calib-data", str(tmp_path / "empty")]
    elif case == "unreadable_calib":
        d = tmp_path / "junk" / "cls"
        d.mkdir(parents=True)
        for i in range(3):
            (d / f"{i}.png").write_bytes(b"\x89PNG not really")
        extra = ["--calib-data", str(tmp_path / "junk")]
    elif case == "sparsity_high":
        extra += ["--prune", "1.5", "--train-data", "fashion-mnist:train:100"]
    elif case == "sparsity_zero":
        extra += ["--prune", "0", "--train-data", "fashion-mnist:train:100"]
    elif case == "unknown_recipe":
        extra += ["--recipe", "int4"]
    elif case == "out_is_file":
        out.write_text("precious")
    elif case == "out_is_input":
        out = src.parent
    elif case == "pqat_without_prune":
        extra += ["--recipe", "pqat-int8", "--train-data", "fashion-mnist:train:100"]
    elif case == "edgetpu_float":
        extra += ["--recipe", "float16", "--target", "edgetpu"]
    elif case in ("qat_targets", "target"):
        extra += {"qat_targets": ["--qat-targets", "teacher"], "target": ["--target", "tpu"]}[case]
    before = {p: p.read_bytes() for p in src.parent.iterdir() if p.is_file()}
    proc = run_cli("convert", model, "--out", str(out), *extra)
    one_line_error(proc, code, needle)
    if case == "out_is_file":
        assert out.read_text() == "precious"
    elif case != "out_is_input":
        _no_partial_outputs(out)
    assert {p: p.read_bytes() for p in src.parent.iterdir() if p.is_file()} == before  # inputs untouched


def test_corrupt_keras_zip_member(tiny_rgb, tmp_path: Path) -> None:
    """A .keras whose weights member is damaged inside a valid zip."""
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(tiny_rgb["keras"]) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, data[:100] if item.filename.endswith(".h5") else data)
    proc = run_cli("convert", str(bad), "--out", str(tmp_path / "o"), *CAL)
    one_line_error(proc, 2, "cannot load")
    _no_partial_outputs(tmp_path / "o")
