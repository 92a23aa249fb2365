"""``convert --embedding``: an L2-normalized image-embedding model for visual search.

The embedding is the output of the classifier's penultimate layer (``auto``: the last layer with
a (N, D) output before the classification head, the global pooling in a MobileNet-style CNN),
followed by ``tf.math.l2_normalize``, which TFLite turns into one ``L2_NORMALIZATION`` op (int8,
and on the Edge TPU table). It is written as a second file, ``embedding.tflite``, not as a
second output of ``model.tflite``: the classifier stays a one-output model that MediaPipe, the
standard metadata and the Edge TPU compiler handle as before, and a kiosk that only classifies
never loads the embedding.

Its drift is measured like the classifier's: the cosine between float and quantized embeddings
of the evaluation images, and the overlap of their 10 nearest neighbours.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.data.datasets import Dataset
from shoplens.errors import UsageError
from shoplens.preprocess import Preprocessor

__all__ = ["build_embedding_model", "embedding_drift", "export_embedding", "find_embedding_layer"]


def find_embedding_layer(model: Any, layer: str = "auto") -> str:
    """The name of the layer whose (N, D) output is the embedding."""
    layers = list(getattr(model, "layers", []) or [])
    if not layers:
        raise UsageError(
            "--embedding needs a Keras model with layers (a plain SavedModel signature has none)"
        )
    if layer != "auto":
        names = [ly.name for ly in layers]
        if layer not in names:
            raise UsageError(f"--embedding {layer!r}: no such layer; the model has {', '.join(names[-8:])}")
        shape = tuple(layers[names.index(layer)].output.shape)
        if len(shape) != 2:
            raise UsageError(f"--embedding {layer!r} outputs {shape}; pick a layer with a (N, D) output")
        return layer
    for ly in reversed(layers[:-1]):  # the last layer is the classification head
        if type(ly).__name__ == "Dropout":
            continue
        shape = tuple(ly.output.shape)
        if len(shape) == 2:
            return ly.name
        break
    raise UsageError(
        "--embedding auto found no (N, D) layer before the classification head (expected global pooling); "
        "name one with --embedding LAYER"
    )


def build_embedding_model(model: Any, layer: str = "auto") -> tuple[Any, str]:
    """(a model from the same input to the L2-normalized ``layer`` output, the layer's name)."""
    import tensorflow as tf

    name = find_embedding_layer(model, layer)
    mod = type(model).__module__
    if mod.startswith("tf_keras"):
        from shoplens_convert._tf import tf_keras

        K = tf_keras()
    else:
        from shoplens_convert._tf import keras3

        K = keras3()
    out = model.get_layer(name).output
    normed = K.layers.Lambda(lambda t: tf.math.l2_normalize(t, axis=-1), name="shoplens_embedding")(out)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return K.Model(inputs, normed, name="shoplens_embedding_model"), name


def _knn(v: np.ndarray, k: int) -> np.ndarray:
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    return np.argpartition(-sims, k, axis=1)[:, :k]


def embedding_drift(
    float_model: Any,
    tflite: bytes,
    dataset: Dataset,
    contract: PreprocessContract,
    *,
    limit: int = 2000,
    k: int = 10,
) -> dict[str, Any]:
    """Cosine float-vs-quantized on up to ``limit`` images, and neighbour overlap@k."""
    from shoplens.embedder import Embedder
    from shoplens.options import BaseOptions, ImageEmbedderOptions

    pre = Preprocessor(contract, input_order="BGR")
    floats: list[np.ndarray] = []
    quants: list[np.ndarray] = []
    opts = ImageEmbedderOptions(base_options=BaseOptions(model_asset_buffer=tflite, num_threads=1))
    with Embedder(opts) as emb:
        n = 0
        for batch in dataset.batches(128):
            take = batch.images[: limit - n]
            x = np.stack([pre(img) for img in take])
            floats.append(np.asarray(float_model(x, training=False), np.float64))
            qx = np.empty((len(take), *emb.preprocessor.out_shape), emb.preprocessor.out_dtype)
            for i, img in enumerate(take):
                emb.preprocessor(img, qx[i])
            quants.append(emb.embed_preprocessed(qx).astype(np.float64))
            n += len(take)
            if n >= limit:
                break
    f = np.concatenate(floats)
    q = np.concatenate(quants)
    f /= np.linalg.norm(f, axis=1, keepdims=True) + 1e-12
    q /= np.linalg.norm(q, axis=1, keepdims=True) + 1e-12
    cos = np.sum(f * q, axis=1)
    kk = min(k, len(f) - 1)
    overlap = float("nan")
    if kk >= 1:
        nf, nq = _knn(f, kk), _knn(q, kk)
        overlap = float(np.mean([len(set(a) & set(b)) / kk for a, b in zip(nf, nq, strict=True)]))
    return {
        "images": len(f),
        "dim": int(f.shape[1]),
        "cosine_mean": round(float(cos.mean()), 6),
        "cosine_p5": round(float(np.percentile(cos, 5)), 6),
        "cosine_min": round(float(cos.min()), 6),
        f"neighbour_overlap_at_{kk}": round(overlap, 6),
        "target_cosine_mean": 0.98,
        "meets_target": bool(cos.mean() >= 0.98),
    }


def export_embedding(
    work_model: Any,
    layer: str,
    chosen: str,
    calibration: np.ndarray | None,
    contract: PreprocessContract,
    labels: tuple[str, ...],
    drift_data: Dataset | None,
    *,
    io_type: str = "uint8",
    per_tensor: bool = False,
    static_batch: bool = False,
) -> tuple[bytes, dict[str, Any]]:
    """``embedding.tflite`` with the chosen recipe's quantization, and its block for the report."""
    from shoplens_convert.edgetpu_target import make_static
    from shoplens_convert.flatbuffer import compact_model
    from shoplens_convert.metadata import embed_shoplens_metadata, shoplens_metadata_dict
    from shoplens_convert.quantize import quantize

    emb_model, name = build_embedding_model(work_model, layer or "auto")
    mode = chosen if chosen in ("float32", "float16", "dynamic") else "int8"
    raw = quantize(emb_model, mode, calibration=calibration if mode == "int8" else None, io_type=io_type,
                   per_tensor=per_tensor, static_batch=static_batch)  # fmt: skip
    if static_batch:
        raw = make_static(raw)
    meta = shoplens_metadata_dict(contract, labels, output="embedding", embedding_layer=name)
    emb_bytes = embed_shoplens_metadata(compact_model(raw), meta)
    block: dict[str, Any] = {"file": "embedding.tflite", "layer": name, "quantization": mode,
                             "bytes": len(emb_bytes)}  # fmt: skip
    if chosen in ("qat-int8", "pqat-int8"):
        block["note"] = "post-training int8 of the pre-QAT backbone (the QAT graph is not split)"
    if drift_data is not None:
        block["drift"] = embedding_drift(emb_model, emb_bytes, drift_data, contract)
        block["drift"]["data"] = drift_data.name
    return emb_bytes, block
