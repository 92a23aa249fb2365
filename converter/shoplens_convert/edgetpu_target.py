"""``--target edgetpu``: a static batch-1 model, the pre-flight in the report, and the compiler.

The converter writes batch-flexible models (shape signature ``[-1, H, W, C]``); the Edge TPU needs
static shapes, so every ``-1`` is pinned to the concrete size the converter already traced (1 for
the batch; the converter also traces with a batch of 1, see ``quantize(static_batch=True)``, so
shape arithmetic folds away). Hard swish (MobileNetV3) is traced as ops the Edge TPU runs, see
:func:`edgetpu_activations`. The pre-flight (:mod:`shoplens.edgetpu`) then predicts the mapping;
:meth:`ConversionResult.save` runs ``edgetpu_compiler`` when it is installed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from shoplens.edgetpu import preflight
from shoplens_convert._tf import tensorflow
from shoplens_convert.flatbuffer import pack_model, parse_model

__all__ = ["edgetpu_activations", "make_static", "preflight_block"]

_HARD_SWISH_NAMES = ("hard_silu", "hard_swish")


def make_static(tflite: bytes) -> bytes:
    """The same model with every dynamic dimension (-1 in a shape signature) pinned to its size."""
    model = parse_model(tflite)
    changed = False
    for sg in model.subgraphs or []:
        for t in sg.tensors or []:
            sig = t.shapeSignature
            if sig is None or not len(sig):
                continue
            if np.any(np.asarray(sig) < 0) and t.shape is not None and np.all(np.asarray(t.shape) > 0):
                t.shapeSignature = None
                changed = True
    return pack_model(model, len(tflite)) if changed else tflite


def preflight_block(model: bytes) -> dict[str, Any]:
    return preflight(model).to_dict()


def _hard_swish_edgetpu(x: Any) -> Any:
    """Hard swish as 0.5x * clip(x / 3, -1, 1) + 0.5x (the same function): the converter emits MULs
    (one with a fused RELU_N1_TO_1) and an ADD, which the Edge TPU runs, where ``x * relu6(x + 3)
    / 6`` is fused into HARD_SWISH, which it does not."""
    tf = tensorflow()
    half = x * 0.5
    return half * tf.clip_by_value(x * (1.0 / 3.0), -1.0, 1.0) + half


@contextlib.contextmanager
def edgetpu_activations(model: Any) -> Iterator[int]:
    """While converting: every hard-swish activation of ``model`` (nested models included; Keras 3,
    tf-keras and the bridge's layers) traced as :func:`_hard_swish_edgetpu`. Yields how many were
    swapped; the model is unchanged afterwards. Not for QAT models: the pieces would lack the
    ranges QAT learnt for the whole activation (they keep HARD_SWISH; the report's pre-flight
    lists it)."""
    from shoplens_convert._tf import keras3, tf_keras

    flatten = getattr(model, "_flatten_layers", None)  # a SavedModel signature has no layers
    layers = list(flatten(include_self=False, recursive=True)) if flatten is not None else []
    if any(type(layer).__name__.startswith("QuantizeWrapper") for layer in layers):
        yield 0
        return
    k = tf_keras() if type(model).__module__.startswith("tf_keras") else keras3()
    targets = {f for n in _HARD_SWISH_NAMES if (f := getattr(k.activations, n, None)) is not None}
    swapped: list[tuple[Any, str, Any]] = []
    for layer in layers:
        if type(layer).__name__ == "ShopLensActivation" and layer.activation in _HARD_SWISH_NAMES:
            swapped.append((layer, "_fn", layer._fn))
        elif getattr(layer, "activation", None) in targets:
            swapped.append((layer, "activation", layer.activation))
    try:
        for layer, attr, _ in swapped:
            object.__setattr__(layer, attr, _hard_swish_edgetpu)
        yield len(swapped)
    finally:
        for layer, attr, fn in swapped:
            object.__setattr__(layer, attr, fn)
