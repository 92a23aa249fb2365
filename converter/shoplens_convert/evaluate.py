"""Evaluate a Keras model on a data spec through the SDK's preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shoplens.data.spec import open_dataset
from shoplens.errors import DataError
from shoplens.metrics import EvalResult, evaluate
from shoplens.preprocess import Preprocessor
from shoplens_convert.load import find_labels, find_sidecar_contract, load_keras_model

__all__ = ["evaluate_keras"]


def evaluate_keras(
    model_path: str | Path,
    data: str,
    *,
    contract_path: Path | None = None,
    labels_path: Path | None = None,
    batch_size: int = 256,
    show_progress: bool = False,
    unsafe_load: bool = False,
) -> EvalResult:
    """Top-1/top-5 of a Keras model on ``data`` (a data spec)."""
    loaded = load_keras_model(model_path, unsafe=unsafe_load)
    contract = find_sidecar_contract(loaded.path, contract_path)
    names = find_labels(loaded.path, labels_path, loaded.num_classes)
    _, h, w, c = loaded.input_shape
    if (h, w, c) != (contract.height, contract.width, contract.channels):
        raise DataError(
            f"contract expects {contract.height}x{contract.width}x{contract.channels} "
            f"but the model input is {h}x{w}x{c}"
        )
    dataset = open_dataset(data)
    if len(dataset.label_names) != len(names):
        raise DataError(f"{dataset.name} has {len(dataset.label_names)} classes, the model {len(names)}")
    model = loaded.model

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model(x, training=False))

    return evaluate(
        predict,
        dataset,
        Preprocessor(contract, input_order="BGR"),
        model_name=loaded.path.name,
        label_names=names,
        batch_size=batch_size,
        show_progress=show_progress,
    )
