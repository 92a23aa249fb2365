"""`shoplens classify` and `shoplens inspect` as real subprocesses on real models."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
from test_cli import _one_line_error

from conftest import run_cli


def test_inspect_json(tiny_rgb) -> None:
    p = run_cli("inspect", str(tiny_rgb["int8"]), "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["inputs"][0]["dtype"] == "uint8" and doc["inputs"][0]["shape"] == [1, 32, 32, 3]
    assert "scale" in doc["inputs"][0]["quantization"]
    assert doc["shoplens"]["labels"][8] == "Bag"
    assert doc["shoplens"]["contract"]["size"] == [32, 32]
    assert doc["op_histogram"]["CONV_2D"] == 2 and doc["compiled_for_edgetpu"] is False


def test_inspect_text_and_errors(tiny_rgb, tmp_path: Path) -> None:
    p = run_cli("inspect", str(tiny_rgb["nometa"]))
    assert p.returncode == 0 and "no ShopLens metadata" in p.stdout and "CONV_2D x2" in p.stdout
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(tiny_rgb["int8"].read_bytes()[:300])
    _one_line_error(run_cli("inspect", str(bad)), 2, "corrupt")
    _one_line_error(run_cli("inspect", str(tmp_path / "none.tflite")), 2, "does not exist")


def test_classify_image_folder_and_video(tiny_rgb, tmp_path: Path, fmnist_test) -> None:
    x, _ = fmnist_test
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i}.png"), x[i])
    (folder / "broken.png").write_bytes(b"not a png")
    p = run_cli("classify", str(tiny_rgb["int8"]), str(folder), "--json", "--top-k", "2")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert lines[-1]["summary"]["frames"] == 6 and lines[-1]["summary"]["unreadable"] == 1
    assert all(len(r["categories"]) == 2 for r in lines[:-1] if "categories" in r)
    one = run_cli("classify", str(tiny_rgb["int8"]), str(folder / "0.png"))
    assert one.returncode == 0 and "0.png:" in one.stdout
    video = tmp_path / "kv"
    assert (
        run_cli(
            "data", "kiosk", "--out", str(video), "--video", "--frames", "40", "--bad-fraction", "0.5"
        ).returncode
        == 0
    )
    v = run_cli(
        "classify", str(tiny_rgb["int8"]), str(video / "kiosk.avi"), "--smooth", "--quality", "reject"
    )
    assert v.returncode == 0, v.stderr
    assert "40 frames in" in v.stdout and "fps" in v.stdout


def test_classify_errors(tiny_rgb, tmp_path: Path) -> None:
    _one_line_error(run_cli("classify", str(tiny_rgb["int8"])), 2, "give an IMAGE")
    _one_line_error(
        run_cli("classify", str(tiny_rgb["int8"]), str(tmp_path / "nope.jpg")), 2, "does not exist"
    )
    _one_line_error(run_cli("classify", str(tiny_rgb["int8"]), str(tmp_path)), 2, "holds no images")
    _one_line_error(
        run_cli("classify", str(tiny_rgb["nometa"]), str(tmp_path)), 2, "carries no preprocessing contract"
    )
    _one_line_error(
        run_cli("classify", str(tiny_rgb["int8"]), str(tmp_path), "--delegate", "gpu"), 2,
        "'gpu' is not one of 'cpu', 'edgetpu'",
    )
    _one_line_error(
        run_cli("classify", str(tiny_rgb["int8"]), str(tmp_path), "--quality", "maybe"), 2,
        "'maybe' is not one of 'off', 'warn', 'reject'",
    )
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _one_line_error(run_cli("classify", str(tiny_rgb["int8"]), str(bad)), 2, "cannot read image")
    _one_line_error(run_cli("classify", str(tiny_rgb["int8"]), "--camera", "7"), 2, "cannot open camera 7")
