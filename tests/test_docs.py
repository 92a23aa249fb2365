"""Docs drift is a bug: every documented command must exist with the options it is shown with,
every relative link must resolve, and the CLI reference must be regenerated when the CLI changes."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from conftest import ROOT
from shoplens.cli.main import app

DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def _code_commands(text: str) -> list[str]:
    """Command lines inside ```bash / ```sh / ``` blocks, continuation lines joined, comments cut."""
    cmds: list[str] = []
    for block in re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line.startswith("$ "):
                line = line[2:]
            if line:
                cmds.append(line)
    return cmds


def _documented(prefixes: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for cmd in _code_commands(doc.read_text(encoding="utf-8")):
            for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", cmd):
                if part.startswith(prefixes):
                    out.append((doc.name, part))
    return out


def _options(command) -> set[str]:
    names: set[str] = set()
    for p in command.params:
        if p.param_type_name == "option":
            names.update(p.opts)
            names.update(p.secondary_opts)
    return names | {"--help", "-h"}


SHOPLENS_COMMANDS = _documented(("shoplens ", ".venv/bin/shoplens "))


def test_docs_show_many_commands() -> None:
    assert len(SHOPLENS_COMMANDS) >= 25, len(SHOPLENS_COMMANDS)


@pytest.mark.parametrize(
    ("doc", "line"), SHOPLENS_COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in SHOPLENS_COMMANDS]
)
def test_documented_shoplens_command_exists(doc: str, line: str) -> None:
    tokens = shlex.split(line.split("shoplens ", 1)[1].replace("...", ""))
    cmd = typer.main.get_command(app)
    path = ["shoplens"]
    while tokens and isinstance(getattr(cmd, "commands", None), dict) and tokens[0] in cmd.commands:
        path.append(tokens[0])
        cmd = cmd.commands[tokens.pop(0)]
    if isinstance(getattr(cmd, "commands", None), dict):
        assert not tokens or tokens[0].startswith("-"), (
            f"{doc}: unknown command {' '.join(path)} {tokens[0]!r}"
        )
        return
    known = _options(cmd)
    for tok in tokens:
        if tok.startswith("-") and not re.fullmatch(r"-\d+(\.\d+)?", tok):
            name = tok.split("=", 1)[0]
            if "|" in name or "[" in name:  # a synopsis like [--target cpu|edgetpu]
                continue
            assert name in known, f"{doc}: `{' '.join(path)}` has no option {name} (line: {line})"


SAMPLE_COMMANDS = _documented((".venv/bin/python sample_apps/", "python sample_apps/"))


@pytest.mark.parametrize(("doc", "line"), SAMPLE_COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in SAMPLE_COMMANDS])
def test_documented_sample_app_command_exists(doc: str, line: str) -> None:
    tokens = shlex.split(line)
    script = ROOT / tokens[1]
    assert script.is_file(), f"{doc}: {tokens[1]} does not exist"
    if not any(t.startswith("--") for t in tokens[2:]):
        return
    helptext = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                              timeout=60, cwd=ROOT).stdout  # fmt: skip
    for tok in tokens[2:]:
        if tok.startswith("--"):
            assert tok.split("=", 1)[0] in helptext, f"{doc}: {tokens[1]} has no option {tok}"


def test_sample_app_docstrings_give_their_commands() -> None:
    for app_py in (ROOT / "sample_apps").glob("*/app.py"):
        doc = app_py.read_text(encoding="utf-8").split('"""')[1]
        assert f"sample_apps/{app_py.parent.name}/app.py" in doc, app_py


def test_relative_links_resolve() -> None:
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.name} -> {target}")
    assert not broken, broken


def test_cli_reference_is_current() -> None:
    gen = str(ROOT / "tools" / "gen_cli_docs.py")
    p = subprocess.run([sys.executable, gen, "--check"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr


def test_readme_quickstart_runs_verbatim(tmp_path) -> None:
    """The README's quickstart, line by line as a user pastes it (after `make setup`), in a fresh
    directory that holds only the repository's sample_apps: every command must exit 0."""
    import os

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quickstart\n\n```bash\n(.*?)```", text, flags=re.S)
    assert block, "README has no quickstart block"
    lines = _code_commands(f"```bash\n{block.group(1)}```")
    cmds = [c for c in lines if not c.startswith(("make ", "source "))]
    assert len(cmds) >= 10, cmds
    (tmp_path / "sample_apps").symlink_to(ROOT / "sample_apps")
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "TF_CPP_MIN_LOG_LEVEL": "3"}
    for cmd in cmds:
        p = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
        assert p.returncode == 0, f"README command failed: {cmd}\n{p.stderr[-2000:]}"
    out = tmp_path / "out"
    assert (out / "int8" / "model.tflite").is_file() and (out / "drift.html").is_file()


def test_quickstart_ml_ci_job_runs_on_a_clean_checkout(tmp_path: Path, fmnist_test) -> None:
    """docs/quickstart_ml.md's CI job, its `run:` steps verbatim, on a repository like a user's:
    model/ (the reference model) and data/calib, data/eval (class folders named as the labels)."""
    import json
    import os

    import cv2
    import tomllib

    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist

    text = (ROOT / "docs" / "quickstart_ml.md").read_text(encoding="utf-8")
    job = re.search(r"```yaml\n(jobs:.*?)```", text, flags=re.S)
    assert job, "quickstart_ml.md has no CI job"
    steps = re.findall(r"^\s+- run: (.+)$", job.group(1), flags=re.M)
    install = [s for s in steps if s.startswith("pip install")]
    assert len(install) == 1 and len(steps) >= 4, steps
    # the install step names the checkout the job made (path: shoplens) and an extra it defines
    spec = re.fullmatch(r"pip install '\./(\w+)\[(\w+)\]'", install[0])
    assert spec and f"path: {spec.group(1)}" in job.group(1), install[0]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert spec.group(2) in extras
    (tmp_path / "model").mkdir()
    for f in ("product_cnn.keras", "contract.json", "labels.txt"):
        (tmp_path / "model" / f).symlink_to(ROOT / "sample_apps" / "reference_model" / f)
    for split, n, folder in (("train", 300, "calib"), ("test", 2000, "eval")):
        x, y = (fmnist_test if split == "test" else load_fashion_mnist("train"))
        for i in range(n):
            d = tmp_path / "data" / folder / FASHION_MNIST_LABELS[y[i]].replace("/", "_")
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{i}.png"), x[i])
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for step in steps[steps.index(install[0]) + 1 :]:
        p = subprocess.run(["bash", "-c", step], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=900)  # fmt: skip
        assert p.returncode == 0, f"CI step failed: {step}\n{p.stderr[-2000:]}"
    report = json.loads((tmp_path / "out" / "convert.json").read_text())
    assert report["status"]["accepted"] and report["status"]["checked"], report["status"]
    assert report["accuracy"]["n"] == 2000 and report["accuracy"]["drop_pts"] <= 1.0, report["accuracy"]
    assert json.loads((tmp_path / "out" / "drift.json").read_text())["gate"]["passed"]
    assert (tmp_path / "out" / "drift.html").is_file()


def test_the_released_model_is_the_reference_model_converted() -> None:
    """sample_apps/reference_model/release/ was converted from the committed Keras model (by its
    sha256) under the accuracy guard; `make release-model` rebuilds it after `make train-reference`."""
    import hashlib
    import json

    from shoplens import Classifier

    release = ROOT / "sample_apps" / "reference_model" / "release"
    report = json.loads((release / "report.json").read_text())
    keras = ROOT / "sample_apps" / "reference_model" / "product_cnn.keras"
    assert report["source"]["sha256"] == hashlib.sha256(keras.read_bytes()).hexdigest(), "make release-model"
    assert report["status"]["accepted"] and report["accuracy"]["drop_pts"] <= 1.0
    assert report["sizes"]["model_bytes"] == (release / "model.tflite").stat().st_size
    labels = (ROOT / "sample_apps" / "reference_model" / "labels.txt").read_text().split("\n")[:10]
    with Classifier.create_from_model_path(str(release / "model.tflite")) as clf:
        assert list(clf.labels) == labels  # the labels travel inside the model


def test_quickstart_kiosk_runs_without_tensorflow(tmp_path: Path) -> None:
    """docs/quickstart_kiosk.md's TensorFlow-free path, verbatim, in the venv without TensorFlow
    (.venv-beam: the runtime, ai-edge-litert and numpy 2, as `pip install .` gives)."""
    import json
    import os

    light = ROOT / ".venv-beam" / "bin"
    probe = subprocess.run([light / "python", "-c", "import tensorflow"], capture_output=True, timeout=60)
    assert probe.returncode != 0, "the light venv must not have TensorFlow"
    text = (ROOT / "docs" / "quickstart_kiosk.md").read_text(encoding="utf-8")
    block = re.search(r"## Without TensorFlow[^\n]*\n.*?(```bash\n.*?```)", text, flags=re.S)
    assert block, "quickstart_kiosk.md has no TensorFlow-free section"
    cmds = _code_commands(block.group(1))
    assert len(cmds) == 3 and "--headless" in cmds[1], cmds
    (tmp_path / "sample_apps").symlink_to(ROOT / "sample_apps")
    env = {**os.environ, "PATH": f"{light}:{os.environ['PATH']}", "VIRTUAL_ENV": str(light.parent)}
    for cmd in cmds[:2]:  # the third serves the page until stopped
        p = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
        assert p.returncode == 0, f"quickstart command failed: {cmd}\n{p.stderr[-2000:]}"
    rows = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert "kiosk stopped: 90 frames read" in p.stderr, p.stderr  # a live stream may skip busy frames
    assert 45 <= len(rows) <= 90 and all(r["categories"] or r["rejected"] for r in rows)
