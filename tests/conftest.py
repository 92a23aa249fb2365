"""Shared fixtures: real Fashion-MNIST data and small real models trained in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = ROOT / "sample_apps" / "reference_model"
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-hardware", action="store_true", help="run tests that need an Edge TPU or camera")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-hardware"):
        return
    skip = pytest.mark.skip(reason="needs real hardware; pass --run-hardware")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fmnist_test() -> tuple[np.ndarray, np.ndarray]:
    from shoplens.data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist("test")


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run the real ``shoplens`` console script in a subprocess."""
    exe = Path(sys.executable).parent / "shoplens"
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=full_env, cwd=cwd or ROOT, timeout=600
    )


@pytest.fixture(scope="session")
def tiny_keras_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Keras 3 CNN on 28x28 gray input, trained for a few seconds on 3,000 real images.

    Saved with its contract.json and labels.txt, as a team would hand it over.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from shoplens.contract import PreprocessContract
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
    from shoplens.preprocess import preprocess_batch

    out = tmp_path_factory.mktemp("tiny_model")
    contract = PreprocessContract.from_range(28, 28, 0.0, 1.0, channels=1)
    x, y = load_fashion_mnist("train")
    xs = preprocess_batch(x[:3000], contract)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xs, y[:3000], epochs=3, batch_size=64, verbose=0)
    path = out / "tiny.keras"
    model.save(path)
    (out / "contract.json").write_text(contract.to_json())
    (out / "labels.txt").write_text("\n".join(FASHION_MNIST_LABELS) + "\n")
    return path
