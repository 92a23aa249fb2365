"""Nothing lost: `--overwrite` never destroys an input or a folder we did not write, concurrent builds
are locked, and the silently-wrong answers of the bad-input battery are errors now.

Every case runs the real ``shoplens`` console script in a subprocess and compares the sha256 of
every input file before and after.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from device_pipeline import device_scores, write_outputs

from conftest import one_line_error, run_cli


def _tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or the file itself) -> its sha256."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f.relative_to(path.parent)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _build(catalog: Path, converted: Path, out: Path) -> tuple[str, ...]:
    model = str(converted / "embedding.tflite")
    return ("index", "build", str(catalog / "products.csv"), "--model", model, "--out", str(out))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shoplens.data.catalog_gen import generate_catalog

    out = tmp_path_factory.mktemp("lost") / "catalog"
    generate_catalog(out, count=120, split="train", seed=5)
    return out


def test_index_build_into_its_own_catalog_is_refused(converted: Path, catalog: Path) -> None:
    before = _tree(catalog)
    p = run_cli(*_build(catalog, converted, catalog), "--overwrite")
    one_line_error(p, 2, "holds the input")
    assert _tree(catalog) == before


def test_index_build_onto_a_file_is_refused(converted: Path, catalog: Path, tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    p = run_cli(*_build(catalog, converted, target), "--overwrite")
    one_line_error(p, 2, "is a file, not a folder")
    assert target.read_text() == "mine\n" and sorted(x.name for x in tmp_path.iterdir()) == ["notes.txt"]


def test_bundle_into_the_folder_of_its_model_is_refused(converted: Path, tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    shutil.copyfile(converted / "model.tflite", folder / "mine.tflite")
    (folder / "notes.txt").write_text("not ours\n")
    before = _tree(folder)
    p = run_cli("bundle", str(folder / "mine.tflite"), "--out", str(folder), "--overwrite")
    one_line_error(p, 2, "holds the input")
    assert _tree(folder) == before


def test_eval_never_saves_over_its_model(tiny_rgb, tmp_path: Path) -> None:
    model = tmp_path / "m.keras"
    shutil.copyfile(tiny_rgb["keras"], model)
    for side in ("contract.json", "labels.txt"):
        shutil.copyfile(Path(tiny_rgb["keras"]).parent / side, tmp_path / side)
    before = _tree(model)
    p = run_cli("eval", str(model), "--data", "fashion-mnist:test:20", "--save", str(model), "--overwrite")
    one_line_error(p, 2, "is an input")
    assert _tree(model) == before


def test_drift_never_saves_over_the_bundle_manifest(tiny_rgb, tmp_path: Path) -> None:
    import cv2

    from shoplens.bundle_writer import write_bundle

    bundle = tmp_path / "bundle"
    write_bundle(tiny_rgb["int8"], bundle, frames=8)
    rows = json.loads((bundle / "expected.json").read_text())["frames"]
    frames = ((r["frame"], cv2.imread(str(bundle / r["frame"]), cv2.IMREAD_COLOR)) for r in rows)
    outputs = write_outputs(tmp_path / "device.json", device_scores(bundle / "model.tflite", frames, size=32))
    before = _tree(bundle)
    p = run_cli("drift", "--bundle", str(bundle), "--device-outputs", str(outputs),
                "--save", str(bundle / "manifest.json"), "--overwrite")  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert _tree(bundle) == before
    # and the bundle still works
    assert run_cli("drift", "--bundle", str(bundle), "--device-outputs", str(outputs)).returncode == 0


def test_a_build_in_progress_locks_its_output(converted: Path, catalog: Path, tmp_path: Path) -> None:
    import socket

    out = tmp_path / "idx"
    lock = tmp_path / ".idx.lock"
    build = _build(catalog, converted, out)
    # a live build (a real process holding the lock as a build does): the second gets one line, exit 2
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f"{holder.pid} {socket.gethostname()}\n")
        one_line_error(run_cli(*build), 2, f"another build is writing {out} (pid {holder.pid})")
        assert not out.exists() and lock.exists()  # nothing written, the holder's lock untouched
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock is stale, and the next build takes it over and finishes
    p = run_cli(*build)
    assert p.returncode == 0, p.stderr
    assert not lock.exists()
    info = json.loads(run_cli("index", "info", str(out), "--json").stdout)
    assert info["products"] == info["rows"] == 120  # one build's products, once each


def test_unknown_category_is_an_error(converted: Path, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx"
    assert run_cli(*_build(catalog, converted, out)).returncode == 0
    image = next((catalog / "images").iterdir())
    p = run_cli("search", str(out), str(image), "--category", "Spaceship")
    one_line_error(p, 2, "unknown category 'Spaceship'; the index has: Ankle boot")
