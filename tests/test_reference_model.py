"""The committed reference model reproduces its training log on the full test set."""

from __future__ import annotations

import json

import pytest

from conftest import REFERENCE_DIR, run_cli
from shoplens.contract import PreprocessContract
from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS


@pytest.fixture(scope="module")
def log() -> dict:
    return json.loads((REFERENCE_DIR / "training_log.json").read_text())


def test_committed_files_are_consistent(log: dict) -> None:
    assert (REFERENCE_DIR / "product_cnn.keras").stat().st_size < 8_000_000
    labels = (REFERENCE_DIR / "labels.txt").read_text().split("\n")
    assert tuple(x for x in labels if x) == FASHION_MNIST_LABELS
    c = PreprocessContract.load(REFERENCE_DIR / "contract.json")
    assert c.size == (96, 96) and c.channels == 3 and c.value_range == (-1.0, 1.0)
    assert log["epochs"] >= 1 and log["wall_time_s"] > 0 and len(log["history"]) == log["epochs"]
    assert log["test_top1"] >= 0.92  # the target the team handed over


def test_reevaluating_the_committed_model_reproduces_the_log(log: dict) -> None:
    p = run_cli("eval", str(REFERENCE_DIR / "product_cnn.keras"), "--data", "fashion-mnist:test", "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["n"] == 10_000
    assert res["top1"] >= 0.92
    assert abs(res["top1"] - log["test_top1"]) <= 0.0005  # same file, same data, same preprocessing


def test_reference_model_uses_only_edge_tpu_friendly_layers() -> None:
    import zipfile

    cfg = json.loads(zipfile.ZipFile(REFERENCE_DIR / "product_cnn.keras").read("config.json"))
    kinds = {layer["class_name"] for layer in cfg["config"]["layers"]}
    allowed = {"InputLayer", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Add",
               "GlobalAveragePooling2D", "Dropout", "Dense"}  # fmt: skip
    assert kinds <= allowed, kinds - allowed
