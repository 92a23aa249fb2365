"""The one rule for outputs: ``--overwrite`` replaces our previous outputs, never an input.

Every command that writes goes through here:

* :func:`check_output_file`: a report or result file may not be an input, nor a directory, and
  exists only with ``overwrite``;
* :func:`stage_output_dir` / :func:`publish_output_dir`: a folder output (bundle, index, catalog,
  kiosk frames) is built beside its target and renamed into place. The folder carries a marker
  listing what ShopLens wrote; replacing an existing folder requires ``overwrite`` *and* that it
  holds nothing else (an empty folder, or one a previous run wrote). A folder that is, holds or
  lies inside an input, and a ``--out`` that is a file, are refused;
* :func:`output_lock`: one writer per output at a time; a second run gets a one-line error with
  the first one's pid, and a lock left by a killed run is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from shoplens.errors import DataError, OutputExistsError, UsageError

__all__ = [
    "MARKER",
    "check_not_an_input",
    "check_output_dir",
    "check_output_file",
    "output_lock",
    "publish_output_dir",
    "remove_path",
    "stage_output_dir",
    "write_marker",
]

MARKER = ".shoplens-output.json"


def _resolved(paths: Iterable[str | os.PathLike[str] | None]) -> list[tuple[Path, Path]]:
    return [(Path(p), Path(p).resolve()) for p in paths if p is not None]


def check_not_an_input(
    target: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None]
) -> None:
    """UsageError when writing or replacing ``target`` would touch an input: it is one, it holds one
    (a folder to be replaced), or it lies inside an input folder that is replaced as a whole."""
    t = Path(target).resolve()
    for given, p in _resolved(inputs):
        if t == p:
            raise UsageError(f"{target} is an input ({given}); write the output elsewhere")
        if t in p.parents:
            raise UsageError(f"{target} holds the input {given}; write the output elsewhere")


def check_output_file(
    target: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    overwrite: bool,
) -> Path:
    """A file output may be written: not an input, not a directory, its folder exists, and it
    does not exist yet unless ``overwrite``."""
    p = Path(target)
    check_not_an_input(p, inputs)
    if p.is_dir():
        raise UsageError(f"{p} is a directory; give a file path")
    if not p.parent.is_dir():
        raise UsageError(f"directory {p.parent} does not exist; create it first")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} already exists; pass --overwrite to replace it")
    return p


def _marker_files(out: Path) -> set[str] | None:
    try:
        doc = json.loads((out / MARKER).read_text(encoding="utf-8"))
        return {str(f) for f in doc["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _foreign_entries(out: Path) -> list[str]:
    """What ``out`` holds that a previous ShopLens run did not write (by its marker)."""
    listed = _marker_files(out)
    present = [str(p.relative_to(out)) for p in sorted(out.rglob("*")) if p.is_file() and p.name != MARKER]
    if listed is None:
        return present
    return [f for f in present if f not in listed]


def stage_output_dir(
    out: str | os.PathLike[str], *, overwrite: bool, inputs: Iterable[str | os.PathLike[str] | None] = ()
) -> Path:
    """Check that folder ``out`` may be (re)written; return a fresh temporary folder beside it.

    Build the output there, then :func:`publish_output_dir` it into place.

    Raises:
      UsageError: ``out`` is a file, is or holds an input, or holds files ShopLens did not write.
      OutputExistsError: ``out`` holds a previous output and ``overwrite`` is False.
      DataError: the parent folder cannot be created or written.
    """
    out = check_output_dir(out, overwrite=overwrite, inputs=inputs)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise DataError(f"cannot write in {out.parent}: {exc.strerror or exc}") from None


def check_output_dir(
    out: str | os.PathLike[str], *, overwrite: bool, inputs: Iterable[str | os.PathLike[str] | None] = ()
) -> Path:
    """The checks of :func:`stage_output_dir`, without creating anything."""
    out = Path(out)
    inputs = list(inputs)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; give a folder path")
    check_not_an_input(out, inputs)
    for given, p in _resolved(inputs):
        if out.resolve() in p.parents or out.resolve() == p:
            raise UsageError(f"--out {out} holds the input {given}; write the output elsewhere")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out} already exists and is not empty; pass --overwrite to replace it")
        foreign = _foreign_entries(out)
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise UsageError(
                f"{out} holds files ShopLens did not write ({', '.join(foreign[:3])}{more}); "
                "--overwrite replaces only a previous output: choose an empty or new folder"
            )
    return out


def remove_path(p: Path) -> None:
    """Remove a file, a link or a folder tree (whichever ``p`` is); missing is fine."""
    if p.is_symlink() or p.is_file():
        p.unlink(missing_ok=True)
    elif p.is_dir():
        shutil.rmtree(p)


def write_marker(folder: str | os.PathLike[str], *, command: str = "") -> None:
    """(Re)write the marker of an output folder ShopLens wrote: it lists the files it holds now
    (an index update that replaced files calls this after its commit)."""
    folder = Path(folder)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MARKER)
    from shoplens._version import __version__

    marker = {"written_by": f"shoplens {__version__}", "command": command, "files": files}
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MARKER)


def publish_output_dir(
    finished: str | os.PathLike[str], out: str | os.PathLike[str], *, command: str = ""
) -> None:
    """Write the marker, then rename ``finished`` onto ``out``; a previous ``out`` goes only after."""
    finished, out = Path(finished), Path(out)
    write_marker(finished, command=command)
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        remove_path(old)
        out.rename(old)
        finished.rename(out)
        remove_path(old)
    else:
        finished.rename(out)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def output_lock(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the lock of output ``out`` (a file ``.NAME.lock`` beside it) for a ``with`` block.

    Raises:
      UsageError: another live process holds it (the message names its pid); exit code 2.
    """
    out = Path(out)
    lock = out.with_name(f".{out.name}.lock")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot write in {out.parent}: {exc.strerror or exc}") from None
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid_s, host = [*lock.read_text(encoding="utf-8").split(), "", ""][:2]
                pid = int(pid_s)
            except (OSError, ValueError):
                pid, host = -1, ""
            if pid > 0 and (host != socket.gethostname() or _pid_alive(pid)):
                where = "" if host == socket.gethostname() else f" on {host}"
                raise UsageError(
                    f"another build is writing {out} (pid {pid}{where}); "
                    f"wait for it, or remove {lock} if that process is gone"
                ) from None
            lock.unlink(missing_ok=True)  # left by a run that was killed: take it over
            continue
        except OSError as exc:
            raise DataError(f"cannot write in {out.parent}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    else:
        raise UsageError(f"cannot take the lock {lock}; remove it if no build is running")
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text(encoding="utf-8") == me:
                lock.unlink()
