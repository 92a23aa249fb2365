"""The on-device suite (device_tests/) run as a device would: a fresh bundle, a subprocess, and
each runtime (ai-edge-litert here, tflite-runtime 2.14 in the numpy<2 venv)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

TFLRT_PY = ROOT / ".venv-tflrt" / "bin" / "python"


@pytest.fixture(scope="module")
def fresh_bundle(tiny_rgb, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shoplens.bundle_writer import write_bundle

    out = tmp_path_factory.mktemp("device_suite") / "bundle"
    write_bundle(tiny_rgb["int8"], out, frames=12, seed=11)
    return out


def _suite(python: Path | str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [str(python), "-m", "pytest", "device_tests", "-q", "-s", "-p", "no:cacheprovider", "-rs", *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip


@pytest.mark.parametrize("python", ["litert", "tflite_runtime"])
def test_device_suite_passes_on_a_fresh_bundle(fresh_bundle: Path, python: str) -> None:
    if python == "tflite_runtime":
        if not TFLRT_PY.exists():
            pytest.fail(".venv-tflrt is missing; `make setup` creates it")
        exe: Path | str = TFLRT_PY
    else:
        exe = sys.executable
    p = _suite(exe, "--bundle", str(fresh_bundle), "--threads", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "7 passed" in p.stdout, p.stdout
    want = "tflite_runtime" if python == "tflite_runtime" else "ai_edge_litert"
    assert f"backend {want}, delegate cpu" in p.stdout


def test_device_suite_catches_a_tampered_bundle_and_skips_without_one(
    fresh_bundle: Path, tmp_path: Path
) -> None:
    import shutil

    p = _suite(sys.executable)
    assert p.returncode == 0 and "7 skipped" in p.stdout and "no --bundle given" in p.stdout, p.stdout
    bad = tmp_path / "bundle"
    shutil.copytree(fresh_bundle, bad)
    (bad / "expected" / "000.input.bin").write_bytes(b"\0" * 10)
    p = _suite(sys.executable, "--bundle", str(bad))
    assert p.returncode == 1 and "does not match its sha256" in p.stdout, p.stdout
