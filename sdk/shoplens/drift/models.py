"""The models drift compares: a ``.tflite`` in the SDK, or a Keras model through the converter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from shoplens import postprocess
from shoplens.contract import PreprocessContract
from shoplens.data.datasets import Batch
from shoplens.errors import DataError, DependencyError, ModelError, UsageError
from shoplens.preprocess import Preprocessor


# -- scores -----------------------------------------------------------------------------------
def to_probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows (N, K) of scores as probabilities (:func:`shoplens.postprocess.to_probabilities`)."""
    s = np.asarray(scores, np.float64)
    if s.ndim != 2:
        raise DataError(f"scores must be a 2-D (N, K) array, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise DataError("scores contain NaN or inf values")
    return postprocess.to_probabilities(s)


# -- models -----------------------------------------------------------------------------------
class DriftModel:
    """What drift needs from a model: its labels and contract, and scores for preprocessed input."""

    name: str
    labels: tuple[str, ...]
    contract: PreprocessContract

    def preprocessor(self, contract: PreprocessContract | None = None) -> Preprocessor:
        raise NotImplementedError  # pragma: no cover

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities (N, K) for a batch made by :meth:`preprocessor`."""
        raise NotImplementedError  # pragma: no cover

    def close(self) -> None:
        pass


class TFLiteDriftModel(DriftModel):
    """A ``.tflite`` file in the SDK Classifier (1 thread): the device's own code path."""

    def __init__(self, path: str | Path, *, num_threads: int = 1) -> None:
        from shoplens.classifier import Classifier

        self.path = Path(path)
        self.name = self.path.name
        self._clf = Classifier.create_from_model_path(self.path, num_threads=num_threads)
        self.labels = tuple(self._clf.labels)
        self.contract = self._clf.contract

    def preprocessor(self, contract: PreprocessContract | None = None) -> Preprocessor:
        base = self._clf.preprocessor
        if contract is None:
            return base
        q = base.quantization
        return Preprocessor(contract, input_order=base.input_order, quantization=q,
                            dtype=None if q else base.out_dtype)  # fmt: skip

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return self._clf.predict_preprocessed(inputs)

    def close(self) -> None:
        self._clf.close()


def open_model(
    path: str | Path,
    *,
    keras_opener: Callable[..., DriftModel] | None = None,
    contract_path: Path | None = None,
    labels_path: Path | None = None,
    unsafe_load: bool = False,
) -> DriftModel:
    """A ``.tflite`` file in the SDK; any other model through ``keras_opener``.

    The runtime never imports the converter: a caller that has TensorFlow (the ``shoplens drift``
    command) passes ``keras_opener``, e.g. ``shoplens_convert.drift_model.KerasDriftModel``.

    Raises:
      ModelError: the file does not exist.
      DependencyError: a Keras model and no ``keras_opener`` (the runtime alone cannot run it).
      UsageError: ``--contract``/``--labels`` given for a ``.tflite``, which carries its own.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model {p} does not exist")
    if p.suffix.lower() == ".tflite":
        if contract_path is not None or labels_path is not None:
            raise UsageError("--contract and --labels apply to a Keras reference; a .tflite carries its own")
        return TFLiteDriftModel(p)
    if keras_opener is None:
        raise DependencyError(
            f"{p.name} is not a .tflite; a Keras reference needs the converter: "
            "pip install 'shoplens[convert]'"
        )
    return keras_opener(p, contract_path=contract_path, labels_path=labels_path, unsafe_load=unsafe_load)


def scores_for(model: DriftModel, pre: Preprocessor, batch: Batch, buf: np.ndarray) -> np.ndarray:
    m = len(batch)
    for i, img in enumerate(batch.images):
        pre(img, buf[i])
    s = to_probabilities(model.predict(buf[:m]))
    if s.shape[0] != m:
        raise DataError(f"{model.name} returned {s.shape[0]} score rows for a batch of {m}")
    return s
