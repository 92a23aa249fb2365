"""Evaluate a Keras model on a data spec through the SDK's preprocessing."""

from __future__ import annotations

from pathlib import Path

from shoplens.data.spec import open_dataset
from shoplens.metrics import EvalResult
from shoplens_convert.guard import evaluate_keras_model
from shoplens_convert.load import check_contract_fits, find_labels, find_sidecar_contract, load_keras_model

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
    check_contract_fits(loaded, contract)
    names = find_labels(loaded.path, labels_path, loaded.num_classes)
    return evaluate_keras_model(
        loaded.model, open_dataset(data, labels=names), contract, names, name=loaded.path.name,
        batch_size=batch_size, show_progress=show_progress,
    )  # fmt: skip
