"""Running Google's ``edgetpu_compiler`` (x86-64 Linux only) and reading its log.

The compiler is looked up when called: ``$SHOPLENS_EDGETPU_COMPILER``, else ``edgetpu_compiler``
on PATH. Nothing is ever installed from here; when it is missing the error says how to install
it. It runs with ``--show_operations`` and ``--out_dir`` into a temporary directory, under a
timeout, and its exit status is checked; the compiled ``*_edgetpu.tflite`` is then moved next
to the requested output atomically.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoplens.errors import ConversionError, DependencyError, ModelError, UsageError

__all__ = ["COMPILER_INSTALL_HINT", "CompileResult", "compile_for_edgetpu", "find_compiler", "parse_log"]

COMPILER_ENV = "SHOPLENS_EDGETPU_COMPILER"
COMPILER_INSTALL_HINT = (
    "install the Edge TPU compiler on an x86-64 Debian/Ubuntu machine: add the Coral apt repository "
    "(https://coral.ai/docs/edgetpu/compiler/) and 'apt-get install edgetpu-compiler'"
)
DEFAULT_TIMEOUT_S = 180.0


@dataclass
class CompileResult:
    output: Path | None
    log: str
    compiler_version: str = ""
    ops_on_tpu: int | None = None
    ops_on_cpu: int | None = None
    subgraphs: int | None = None
    on_chip_memory: str = ""
    on_chip_remaining: str = ""
    off_chip_memory: str = ""
    operators: list[dict[str, Any]] = field(default_factory=list)  # op, count, status

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output) if self.output else None,
            "compiler_version": self.compiler_version,
            "ops_on_tpu": self.ops_on_tpu,
            "ops_on_cpu": self.ops_on_cpu,
            "edgetpu_subgraphs": self.subgraphs,
            "on_chip_memory_used": self.on_chip_memory,
            "on_chip_memory_remaining": self.on_chip_remaining,
            "off_chip_memory_used": self.off_chip_memory,
            "operators": self.operators,
        }


def find_compiler() -> Path | None:
    """The compiler to run, or None (never installs anything)."""
    explicit = os.environ.get(COMPILER_ENV)
    if explicit:
        p = Path(explicit)
        return p if p.is_file() and os.access(p, os.X_OK) else None
    found = shutil.which("edgetpu_compiler")
    return Path(found) if found else None


def require_compiler() -> Path:
    exe = find_compiler()
    if exe is None:
        where = (
            f"${COMPILER_ENV} ({os.environ[COMPILER_ENV]}) is not an executable"
            if os.environ.get(COMPILER_ENV)
            else "edgetpu_compiler is not on PATH"
        )
        if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
            raise DependencyError(
                f"{where}, and it only runs on x86-64 Linux (this is {platform.system()} "
                f"{platform.machine()}); compile on an x86-64 Linux machine or in Coral's Colab notebook"
            )
        raise DependencyError(f"{where}; {COMPILER_INSTALL_HINT}")
    return exe


_KV = {
    "compiler_version": r"Edge TPU Compiler version (\S+)",
    "on_chip_memory": r"On-chip memory used for caching model parameters: (\S+)",
    "on_chip_remaining": r"On-chip memory remaining for caching model parameters: (\S+)",
    "off_chip_memory": r"Off-chip memory used for streaming uncached model parameters: (\S+)",
}
_INTS = {
    "subgraphs": r"Number of Edge TPU subgraphs: (\d+)",
    "ops_on_tpu": r"Number of operations that will run on Edge TPU: (\d+)",
    "ops_on_cpu": r"Number of operations that will run on CPU: (\d+)",
}
_OP_ROW = re.compile(r"^([A-Z][A-Z0-9_]+|edgetpu-custom-op)\s+(\d+)\s+(\S.*?)\s*$")


def parse_log(text: str) -> CompileResult:
    """The compiler's stdout (with --show_operations) as a CompileResult (output unset)."""
    r = CompileResult(output=None, log=text)
    for key, pat in _KV.items():
        m = re.search(pat, text)
        if m:
            setattr(r, key, m.group(1))
    for key, pat in _INTS.items():
        m = re.search(pat, text)
        if m:
            setattr(r, key, int(m.group(1)))
    in_table = False
    for line in text.splitlines():
        if re.match(r"^Operator\s+Count\s+Status", line):
            in_table = True
            continue
        if in_table:
            m = _OP_ROW.match(line.strip())
            if m:
                r.operators.append({"op": m.group(1), "count": int(m.group(2)), "status": m.group(3)})
    if r.ops_on_tpu is None and r.operators:
        r.ops_on_tpu = sum(o["count"] for o in r.operators if o["status"].startswith("Mapped to Edge TPU"))
        r.ops_on_cpu = sum(o["count"] for o in r.operators) - r.ops_on_tpu
    return r


def compile_for_edgetpu(
    model: str | Path,
    out_dir: str | Path,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    min_runtime_version: int | None = None,
    compiler: Path | None = None,
) -> CompileResult:
    """Compile ``model`` into ``out_dir/<stem>_edgetpu.tflite`` and parse the compiler's report."""
    src = Path(model)
    if not src.is_file():
        raise ModelError(f"model {src} does not exist")
    from shoplens.tflite_model import read_model_info

    info = read_model_info(src)
    if not any(t.dtype in ("int8", "uint8") and t.quantized for t in info.tensors):
        raise UsageError(
            f"{src} is a float model; the Edge TPU runs only full-integer models: convert with "
            "'shoplens convert MODEL --recipe int8 --target edgetpu'"
        )
    exe = compiler or require_compiler()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgetpu.", dir=out) as tmp:
        cmd = [str(exe), "--show_operations", "--out_dir", tmp]
        if min_runtime_version is not None:
            cmd += ["--min_runtime_version", str(min_runtime_version)]
        cmd.append(str(src))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise ConversionError(
                f"edgetpu_compiler did not finish within {timeout_s:g} s and was stopped; the CPU model "
                "and the pre-flight report are kept"
            ) from None
        except OSError as exc:
            raise DependencyError(f"cannot run {exe}: {exc.strerror or exc}") from None
        text = proc.stdout + ("\n" + proc.stderr if proc.stderr else "")
        if proc.returncode != 0:
            errs = [
                ln.strip() for ln in text.splitlines() if ln.strip().startswith(("ERROR", "Invalid model"))
            ]
            detail = "; ".join(errs[:2]) or (text.strip().splitlines() or ["no output"])[-1]
            raise ConversionError(f"edgetpu_compiler failed (exit {proc.returncode}): {detail}")
        produced = Path(tmp) / f"{src.stem}_edgetpu.tflite"
        if not produced.is_file():
            raise ConversionError(f"edgetpu_compiler exited 0 but wrote no {produced.name}")
        result = parse_log(text)
        final = out / produced.name
        os.replace(produced, final)
        log_src = Path(tmp) / f"{src.stem}_edgetpu.log"
        if log_src.is_file():
            os.replace(log_src, out / log_src.name)
    result.output = final
    return result
