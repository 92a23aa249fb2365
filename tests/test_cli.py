"""The real console script in subprocesses: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest

from conftest import FMNIST_DIR, run_cli
from conftest import one_line_error as _one_line_error
from shoplens._version import __version__


def test_version_and_help() -> None:
    p = run_cli("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"shoplens {__version__}"
    h = run_cli("--help")
    assert h.returncode == 0
    for cmd in ("data", "eval"):
        assert cmd in h.stdout


def test_usage_error_exit_2() -> None:
    _one_line_error(run_cli("eval"), 2, "Missing argument")
    _one_line_error(run_cli("data", "kiosk", "--out", "/tmp/x", "--frames", "0"), 2, "--frames")


def test_data_info_json() -> None:
    p = run_cli("data", "info", "fashion-mnist:test:50", "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["images"] == 50 and sum(info["classes"].values()) == 50


def test_missing_data_names_the_package(tmp_path: Path) -> None:
    p = run_cli("data", "info", "fashion-mnist:test", env={"FASHION_MNIST_DIR": str(tmp_path)})
    _one_line_error(p, 2, "apt-get install dataset-fashion-mnist")


def test_corrupt_idx_file(tmp_path: Path) -> None:
    for f in FMNIST_DIR.iterdir():
        shutil.copy(f, tmp_path / f.name)
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:5000])
    p = run_cli("data", "info", "fashion-mnist:test", env={"FASHION_MNIST_DIR": str(tmp_path)})
    _one_line_error(p, 2, "corrupt or truncated")


def test_empty_image_folder(tmp_path: Path) -> None:
    (tmp_path / "shop" / "bags").mkdir(parents=True)
    _one_line_error(run_cli("data", "info", str(tmp_path / "shop")), 2, "holds no images")


def test_non_image_file_is_skipped_and_counted(tmp_path: Path, fmnist_test) -> None:
    x, _ = fmnist_test
    (tmp_path / "shop" / "bags").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "shop" / "bags" / "a.png"), x[0])
    (tmp_path / "shop" / "bags" / "readme.txt").write_text("hello")
    p = run_cli("data", "info", str(tmp_path / "shop"), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["skipped"] == 1
    assert "skipped 1 non-image files" in p.stderr


@pytest.mark.parametrize("out", ["/sys/shoplens-unwritable", "/proc/shoplens-unwritable"])
def test_unwritable_output_directory(out: str) -> None:
    """/sys and /proc refuse new directories even for root: a real unwritable location."""
    _one_line_error(
        run_cli("data", "kiosk", "--out", out, "--frames", "2"), 2, "cannot write in"
    )


def test_output_path_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "taken"
    f.write_text("user data")
    _one_line_error(run_cli("data", "kiosk", "--out", str(f), "--frames", "2"), 2, "is a file")
    assert f.read_text() == "user data"


def test_kiosk_command_then_info(tmp_path: Path) -> None:
    out = tmp_path / "k"
    p = run_cli("data", "kiosk", "--out", str(out), "--frames", "6", "--bad-fraction", "0.5", "--json")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["frames"] == 6
    q = run_cli("data", "info", f"kiosk:{out}", "--json")
    assert json.loads(q.stdout)["images"] == 6
    again = run_cli("data", "kiosk", "--out", str(out), "--frames", "6")
    _one_line_error(again, 2, "--overwrite")


def test_eval_tiny_keras_model(tiny_keras_model: Path, tmp_path: Path) -> None:
    save = tmp_path / "eval.json"
    p = run_cli(
        "eval", str(tiny_keras_model), "--data", "fashion-mnist:test:1000", "--json", "--save", str(save)
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["n"] == 1000 and 0.5 < res["top1"] <= res["top5"] <= 1.0
    assert json.loads(save.read_text())["top1"] == res["top1"]
    again = run_cli("eval", str(tiny_keras_model), "--data", "fashion-mnist:test:10", "--save", str(save))
    _one_line_error(again, 2, "already exists")


def test_eval_bad_model_files(tmp_path: Path, tiny_keras_model: Path) -> None:
    _one_line_error(
        run_cli("eval", str(tmp_path / "none.keras"), "--data", "fashion-mnist:test:5"), 2, "does not exist"
    )
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK\x03\x04 definitely not a zip")
    _one_line_error(
        run_cli("eval", str(junk), "--data", "fashion-mnist:test:5"), 2, "corrupt or truncated zip"
    )
    trunc = tmp_path / "trunc.keras"
    trunc.write_bytes(tiny_keras_model.read_bytes()[:2000])
    _one_line_error(
        run_cli("eval", str(trunc), "--data", "fashion-mnist:test:5"), 2, "not a valid .keras archive"
    )
    txt = tmp_path / "model.txt"
    txt.write_text("hello")
    _one_line_error(run_cli("eval", str(txt), "--data", "fashion-mnist:test:5"), 2, "unknown model format")


def test_eval_labels_count_mismatch(tiny_keras_model: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    p = run_cli("eval", str(tiny_keras_model), "--data", "fashion-mnist:test:5", "--labels", str(labels))
    _one_line_error(p, 2, "lists 3 labels but the model predicts 10")


def test_lambda_layer_is_refused(tmp_path: Path) -> None:
    """Loading must never execute code from the file: a Lambda layer is refused before loading."""
    import keras

    marker = tmp_path / "pwned"
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
    path = tmp_path / "lambda.keras"
    model.save(path)
    p = run_cli("eval", str(path), "--data", "fashion-mnist:test:5")
    _one_line_error(p, 2, "Lambda layer")
    assert "--unsafe-load" in p.stderr
    assert not marker.exists()
