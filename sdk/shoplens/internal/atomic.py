"""Atomic file writes: readers never see a half-written model, report or dataset."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shoplens.errors import DataError, OutputExistsError

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_many",
    "atomic_write_text",
    "check_target",
    "ensure_output_dir",
    "sha256_file",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` as a directory (and parents) and prove it is writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputExistsError(f"output path {p} is a file, not a directory; choose a directory path")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create output directory {p}: {exc.strerror or exc}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise DataError(f"output directory {p} is not writable; pick another --out or fix its permissions")
    return p


def check_target(target: Path, overwrite: bool) -> None:
    if target.is_dir():
        raise OutputExistsError(f"{target} is a directory; give a file path")
    if target.exists() and not overwrite:
        raise OutputExistsError(
            f"{target} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    check_target(target, overwrite)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise DataError(f"directory {parent} does not exist; create it first")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise DataError(f"cannot write in {parent}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    with atomic_path(target, overwrite=overwrite) as tmp:
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise DataError(f"cannot write {target}: {exc.strerror or exc}") from None
    return Path(target)


def atomic_write_many(
    directory: str | os.PathLike[str], files: dict[str, bytes], *, overwrite: bool = False
) -> dict[str, Path]:
    """Write several files so that either all of them are replaced or none is.

    Every file is first written and fsynced under a temporary name in ``directory``; only when
    all of them are on disk are they renamed into place (renames do not need space). A full disk
    or any other failure removes the temporaries and leaves the previous files untouched.
    """
    d = Path(directory)
    for name in files:
        check_target(d / name, overwrite)
    tmps: dict[str, Path] = {}
    try:
        for name, data in files.items():
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=d)
            tmps[name] = Path(tmp_name)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp_name, 0o666 & ~_umask())
    except OSError as exc:
        for t in tmps.values():
            with contextlib.suppress(OSError):
                t.unlink()
        raise DataError(
            f"cannot write {d}: {exc.strerror or exc}; the previous outputs are unchanged"
        ) from None
    except BaseException:
        for t in tmps.values():
            with contextlib.suppress(OSError):
                t.unlink()
        raise
    for name, t in tmps.items():
        os.replace(t, d / name)
    return {name: d / name for name in files}


def atomic_write_text(target: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"), overwrite=overwrite)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
