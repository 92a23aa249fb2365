"""The runtime never imports TensorFlow: not on import, not for --help, not for data commands."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import ROOT

HEAVY = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "shoplens_convert")


def _modules_after(code: str) -> set[str]:
    probe = f"""
import sys
{code}
print("\\n".join(sorted(m for m in sys.modules)))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return set(out.stdout.split())


def _heavy(mods: set[str]) -> set[str]:
    return {m for m in mods if m.split(".")[0] in HEAVY}


def test_import_shoplens_leaves_no_tensorflow() -> None:
    mods = _modules_after(
        "import shoplens, shoplens.data, shoplens.metrics, shoplens.drift, shoplens.drift_html, "
        "shoplens.catalog, shoplens.embedder, shoplens.edgetpu, shoplens.bundle"
    )
    assert "shoplens" in mods
    assert _heavy(mods) == set()


def test_cli_help_leaves_no_tensorflow() -> None:
    mods = _modules_after(
        "from shoplens.cli.main import main\n"
        "for argv in (['--help'], ['eval', '--help'], ['data', 'info', 'fashion-mnist:test:5']):\n"
        "    assert main(argv) == 0, argv\n"
    )
    assert "shoplens.cli.main" in mods
    assert _heavy(mods) == set()


def test_sdk_sources_never_import_tensorflow() -> None:
    offenders = []
    for path in (ROOT / "sdk").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                # the CLI may import the converter lazily, inside a command body only
                if n.split(".")[0] in HEAVY and not (
                    n.startswith("shoplens_convert") and node.col_offset > 0
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {n}")
    assert offenders == []
