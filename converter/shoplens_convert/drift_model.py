"""A Keras model (any format the converter reads) as the reference of ``shoplens drift``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.drift.models import DriftModel, to_probabilities
from shoplens.postprocess import softmax
from shoplens.preprocess import Preprocessor
from shoplens_convert.load import check_contract_fits, find_labels, find_sidecar_contract, load_keras_model

__all__ = ["KerasDriftModel"]


class KerasDriftModel(DriftModel):
    """Float scores of the Keras source through the SDK's preprocessing (BGR frames in)."""

    def __init__(
        self,
        path: str | Path,
        *,
        contract_path: Path | None = None,
        labels_path: Path | None = None,
        unsafe_load: bool = False,
    ) -> None:
        loaded = load_keras_model(path, unsafe=unsafe_load)
        self.path = loaded.path
        self.name = loaded.path.name
        self.contract = find_sidecar_contract(loaded.path, contract_path)
        check_contract_fits(loaded, self.contract)
        self.labels = find_labels(loaded.path, labels_path, loaded.num_classes)
        self._model = loaded.model
        last = (getattr(loaded.model, "layers", None) or [None])[-1]
        act = getattr(getattr(last, "activation", None), "__name__", "")
        self._logits = act == "linear"

    def preprocessor(self, contract: PreprocessContract | None = None) -> Preprocessor:
        return Preprocessor(contract or self.contract, input_order="BGR")

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        y = np.asarray(self._model(inputs, training=False), np.float64)
        return softmax(y) if self._logits else to_probabilities(y)
