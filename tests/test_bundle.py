"""Device bundles: written by the real CLI, verified, tampering detected, parity recomputable."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import one_line_error, run_cli
from shoplens.bundle import verify_bundle
from shoplens.bundle_writer import write_bundle
from shoplens.errors import DataError, InvalidFrameError, OutputExistsError


def test_bundle_cli_and_parity(tiny_rgb, tmp_path: Path) -> None:
    out = tmp_path / "b"
    p = run_cli("bundle", str(tiny_rgb["int8"]), "--out", str(out), "--frames", "6", "--json")
    assert p.returncode == 0, p.stderr
    manifest = json.loads(p.stdout)
    assert verify_bundle(out) == manifest
    assert len([f for f in manifest["files"] if f.startswith("frames/")]) == 6
    exp = json.loads((out / "expected.json").read_text())
    assert exp["input_dtype"] == "uint8" and exp["input_shape"] == [1, 32, 32, 3]
    # what a device does: read the PNG, preprocess, compare with the golden tensor and scores
    from shoplens.classifier import Classifier

    with Classifier.create_from_model_path(out / "model.tflite") as clf:
        for row in exp["frames"]:
            frame = cv2.imread(str(out / row["frame"]), cv2.IMREAD_COLOR)
            tensor = np.empty((1, 32, 32, 3), np.uint8)
            clf.preprocessor(frame, tensor)
            golden = np.frombuffer((out / row["input"]).read_bytes(), np.uint8).reshape(1, 32, 32, 3)
            assert np.array_equal(tensor, golden)
            assert clf.classify(frame).top.index == row["top1"]
            assert np.allclose(clf.predict_preprocessed(golden)[0], row["scores"], atol=1e-5)
        with pytest.raises(InvalidFrameError, match="expected"):
            clf.predict_preprocessed(np.zeros((1, 32, 32, 3), np.float32))  # wrong dtype for this model
    # existing bundle kept unless --overwrite
    one_line_error(run_cli("bundle", str(tiny_rgb["int8"]), "--out", str(out)), 2, "--overwrite")
    assert (
        run_cli("bundle", str(tiny_rgb["int8"]), "--out", str(out), "--overwrite", "--frames", "2").returncode
        == 0
    )
    assert verify_bundle(out)["frames"] == 2


def test_tampered_and_incomplete_bundles(tiny_rgb, tmp_path: Path) -> None:
    out = tmp_path / "b"
    write_bundle(tiny_rgb["int8"], out, frames=2)
    (out / "frames" / "000.png").write_bytes(b"not the frame")
    with pytest.raises(DataError, match="does not match its sha256"):
        verify_bundle(out)
    write_bundle(tiny_rgb["int8"], out, frames=2, overwrite=True)
    (out / "expected" / "001.input.bin").unlink()
    with pytest.raises(DataError, match=r"missing expected/001\.input\.bin"):
        verify_bundle(out)
    with pytest.raises(DataError, match="not a ShopLens bundle"):
        verify_bundle(tmp_path)
    with pytest.raises(OutputExistsError):
        write_bundle(tiny_rgb["int8"], out, frames=2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]  # no temporary left


def test_convert_with_bundle(tiny_rgb, tmp_path: Path) -> None:
    out = tmp_path / "o"
    p = run_cli("convert", str(tiny_rgb["keras"]), "--out", str(out),
                "--calib-data", "fashion-mnist:train:100", "--bundle", "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["bundle"]["frames"] == 16
    m = verify_bundle(out / "bundle")
    assert (out / "bundle" / "model.tflite").read_bytes() == (out / "model.tflite").read_bytes()
    assert m["labels"][0] == "T-shirt/top"
