"""The runtime never imports TensorFlow: not on import, not for --help, not for data commands.

Nor Apache Beam or the ANN library (optional engines, imported only by their own modules), and
``import shoplens`` itself is light: the public API loads when first used.
"""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import ROOT

HEAVY = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "shoplens_convert")
OPTIONAL_ENGINES = ("apache_beam", "usearch", "faiss", "numba", "llvmlite")


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
        "import shoplens, shoplens.data, shoplens.metrics, shoplens.drift, shoplens.drift.html, "
        "shoplens.catalog, shoplens.embedder, shoplens.edgetpu, shoplens.bundle"
    )
    assert "shoplens" in mods
    assert _heavy(mods) == set()
    assert {m for m in mods if m.split(".")[0] in OPTIONAL_ENGINES} == set()


def test_public_api_is_lazy_light_and_complete() -> None:
    """``import shoplens`` loads neither numpy nor OpenCV; every name in __all__ resolves."""
    probe = (
        "import sys, time\n"
        "t = time.perf_counter(); import shoplens; dt = time.perf_counter() - t\n"
        "light = not any(m in sys.modules for m in ('numpy', 'cv2', 'ai_edge_litert'))\n"
        "missing = [n for n in shoplens.__all__ if getattr(shoplens, n, None) is None]\n"
        "print(dt, light, missing)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    dt, light, missing = out.stdout.split(maxsplit=2)
    assert light == "True" and missing.strip() == "[]", out.stdout
    assert float(dt) < 0.5  # a bound on import cost, not a timing target: lazy loading makes it ~5 ms
    mods = _modules_after(
        "from shoplens import Classifier, ClassifierPool, Embedder, CatalogIndex, QualityOptions"
    )
    assert _heavy(mods) == set() and {m for m in mods if m.split(".")[0] in OPTIONAL_ENGINES} == set()


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
            in_cli = path.relative_to(ROOT).parts[:3] == ("sdk", "shoplens", "cli")
            for n in names:
                # only a CLI command may import the converter, lazily, inside its body
                if n.split(".")[0] in HEAVY and not (
                    n.startswith("shoplens_convert") and node.col_offset > 0 and in_cli
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {n}")
    assert offenders == []
