"""A disk that fills up while the converter writes: nothing partial, the previous output intact.

A real small tmpfs (the tests run as root here; elsewhere they skip, saying why)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import one_line_error, run_cli


@pytest.fixture()
def tiny_disk(tmp_path: Path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    cmd = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_convert_on_a_full_disk_keeps_the_previous_output(tiny_rgb, tiny_disk: Path) -> None:
    out = tiny_disk / "out"
    keras_model = str(tiny_rgb["keras"])
    p = run_cli("convert", keras_model, "--out", str(out), "--calib-data", "fashion-mnist:train:50")
    assert p.returncode == 0, p.stderr
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    # fill the disk, leaving less room than one more model needs
    free = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
    (tiny_disk / "filler").write_bytes(b"\0" * max(0, free - 8 * 1024))
    calib = "fashion-mnist:train:60"
    p = run_cli("convert", keras_model, "--out", str(out), "--calib-data", calib, "--overwrite")
    one_line_error(p, 2, "No space left on device")
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before  # same files and bytes, no temporaries
