"""``LiteRTModelHandler``: a ``.tflite`` model as an Apache Beam RunInference model handler.

Beam's RunInference has handlers for PyTorch, sklearn, TensorFlow, ONNX and TensorRT, none for
TFLite/LiteRT. This one loads the model through the ShopLens SDK (the contract, preprocessing,
input quantization, labels, delegate and thread options the model carries), so a worker needs
only the runtime install (numpy, OpenCV, LiteRT), never TensorFlow. A classifier gives class
probabilities, an embedding model (``convert --embedding``) unit embeddings. It works under
``KeyedModelHandler``, so every prediction keeps its product id::

    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

    preds = keyed_images | RunInference(KeyedModelHandler(LiteRTModelHandler("model.tflite")))
    # -> (product_id, PredictionResult(image, probabilities))

Beam shares the loaded model across the threads of a worker process (the SDK's tasks are
thread-safe); batching follows :meth:`batch_elements_kwargs`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from shoplens.errors import ModelError, UsageError

__all__ = ["LiteRTModelHandler"]


class LiteRTModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):  # type: ignore[misc]
    """Run a ShopLens ``.tflite`` (classifier or embedding model) inside Beam's RunInference.

    Args:
      model_path: the ``.tflite`` file (a local path the workers can read; see docs/scale.md for
        how the model reaches remote workers).
      num_threads: interpreter threads per model copy.
      delegate: ``cpu`` or ``edgetpu``; ``backend``: ``auto``, ``ai_edge_litert`` or ``tflite_runtime``.
      min_batch_size, max_batch_size: Beam's batching of elements into one ``run_inference`` call.

    Raises (when the model loads on a worker):
      ModelError: the file is missing, corrupt, or not a (1, H, W, C) -> (1, K) model.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        num_threads: int = 1,
        delegate: str = "cpu",
        backend: str = "auto",
        min_batch_size: int = 1,
        max_batch_size: int = 64,
    ) -> None:
        if not 1 <= min_batch_size <= max_batch_size:
            raise UsageError(
                f"need 1 <= min_batch_size <= max_batch_size, got {min_batch_size}, {max_batch_size}"
            )
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.model_path = str(model_path)
        self.num_threads = num_threads
        self.delegate = delegate
        self.backend = backend

    def load_model(self) -> Any:
        """A Classifier, or an Embedder for an embedding model (from the model's metadata)."""
        from shoplens.classifier import Classifier
        from shoplens.embedder import Embedder
        from shoplens.tflite_model import read_model_info

        p = Path(self.model_path)
        if not p.is_file():
            raise ModelError(f"model {p} does not exist on this worker")
        meta = read_model_info(p).shoplens_metadata or {}
        task = Embedder if meta.get("output") == "embedding" else Classifier
        return task.create_from_model_path(p, num_threads=self.num_threads, delegate=self.delegate,
                                           backend=self.backend)  # fmt: skip

    def run_inference(
        self, batch: Sequence[np.ndarray], model: Any, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        """Preprocess every image with the model's contract and run it: probabilities (classifier)
        or embeddings (embedding model), one ``PredictionResult`` per image."""
        pre = model.preprocessor
        inputs = np.empty((len(batch), *pre.out_shape), pre.out_dtype)
        for i, img in enumerate(batch):
            pre(img, inputs[i])
        if hasattr(model, "predict_preprocessed"):
            out = model.predict_preprocessed(inputs)
        else:
            out = model.embed_preprocessed(inputs)
        return [PredictionResult(img, out[i]) for i, img in enumerate(batch)]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return int(sum(np.asarray(img).nbytes for img in batch))

    def get_metrics_namespace(self) -> str:
        return "shoplens"

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return dict(self._batching_kwargs)

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        if inference_args:
            raise UsageError("LiteRTModelHandler takes no inference_args")
