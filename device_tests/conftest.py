"""Options and fixtures of the on-device suite: ``pytest device_tests --bundle DIR``.

Needs only the ShopLens SDK, a TFLite runtime (ai-edge-litert or tflite-runtime) and pytest:
no TensorFlow, no dataset. See docs/device_tests.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("shoplens device tests")
    g.addoption("--bundle", default=None, help="the device bundle to check (from 'shoplens bundle')")
    g.addoption(
        "--delegate", default="cpu", choices=("cpu", "edgetpu"), help="delegate to load the model with"
    )
    g.addoption("--device", default=None, help="Edge TPU device: usb, pci or :N")
    g.addoption("--threads", type=int, default=1, help="interpreter threads")
    g.addoption("--backend", default="auto", help="auto, ai_edge_litert, tflite_runtime or tensorflow")


def pytest_report_header(config: pytest.Config) -> list[str]:
    import numpy as np

    from shoplens.errors import ShopLensError
    from shoplens.runtime import detect_backend

    try:
        backend = detect_backend(config.getoption("--backend")).value
    except (ShopLensError, ValueError) as exc:
        backend = f"unavailable ({exc})"
    return [
        f"shoplens device tests: bundle={config.getoption('--bundle')} "
        f"delegate={config.getoption('--delegate')} threads={config.getoption('--threads')} "
        f"backend={backend} numpy={np.__version__}"
    ]


@pytest.fixture(scope="session")
def bundle_dir(pytestconfig: pytest.Config) -> Path:
    b = pytestconfig.getoption("--bundle")
    if not b:
        pytest.skip("no --bundle given: make one with 'shoplens bundle MODEL --out DIR', then "
                    "'pytest device_tests --bundle DIR'")  # fmt: skip
    p = Path(b)
    if not p.is_dir():
        pytest.fail(f"--bundle {p} is not a directory")
    return p


@pytest.fixture(scope="session")
def manifest(bundle_dir: Path) -> dict[str, Any]:
    from shoplens.bundle import verify_bundle

    return verify_bundle(bundle_dir)


@pytest.fixture(scope="session")
def expected(bundle_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    return json.loads((bundle_dir / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def budgets(manifest: dict[str, Any]) -> dict[str, float]:
    return dict(manifest["budgets"])


@pytest.fixture(scope="session")
def frames(bundle_dir: Path, expected: dict[str, Any]) -> list:
    import cv2

    out = []
    for row in expected["frames"]:
        img = cv2.imread(str(bundle_dir / row["frame"]), cv2.IMREAD_COLOR)
        assert img is not None, f"cannot decode {row['frame']}"
        out.append(img)
    return out


@pytest.fixture(scope="session")
def classifier(bundle_dir: Path, manifest: dict[str, Any], pytestconfig: pytest.Config):
    from shoplens.classifier import Classifier
    from shoplens.errors import ShopLensError

    delegate = pytestconfig.getoption("--delegate")
    try:
        clf = Classifier.create_from_model_path(
            bundle_dir / "model.tflite",
            delegate=delegate,
            device=pytestconfig.getoption("--device"),
            num_threads=pytestconfig.getoption("--threads"),
            backend=pytestconfig.getoption("--backend"),
        )
    except ShopLensError as exc:
        pytest.fail(f"the bundle's model does not load with --delegate {delegate}: {exc.message}")
    yield clf
    clf.close()
