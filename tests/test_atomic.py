from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoplens.errors import DataError, OutputExistsError
from shoplens.internal.atomic import atomic_path, atomic_write_text, ensure_output_dir


def test_refuses_overwrite_unless_asked(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    atomic_write_text(p, "one")
    with pytest.raises(OutputExistsError, match="overwrite"):
        atomic_write_text(p, "two")
    assert p.read_text() == "one"
    atomic_write_text(p, "two", overwrite=True)
    assert p.read_text() == "two"


def test_failure_leaves_previous_file_and_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "model.tflite"
    p.write_text("previous")
    with pytest.raises(RuntimeError), atomic_path(p, overwrite=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert p.read_text() == "previous"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model.tflite"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_dir_non_root(tmp_path: Path) -> None:  # pragma: no cover - CI runs as root
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    with pytest.raises(DataError, match="not writable"):
        ensure_output_dir(d)


def test_output_dir_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(OutputExistsError, match="is a file"):
        ensure_output_dir(f)
    with pytest.raises(DataError, match="cannot create"):
        ensure_output_dir(f / "sub")
