"""Quantize a Keras model to TFLite: float32, float16, dynamic-range and full int8.

Calibration images go through the SDK's own :class:`shoplens.preprocess.Preprocessor`, so the
int8 ranges are measured on exactly the input the device will produce.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.data.datasets import Dataset
from shoplens.errors import ConversionError, DataError, ShopLensError, UsageError
from shoplens.internal.progress import progress
from shoplens.internal.quiet import quiet_native_stderr
from shoplens_convert._tf import tensorflow
from shoplens_convert.frames import preprocessed_arrays

__all__ = ["RECIPES", "calibration_frames", "make_converter", "quantize", "run_converter"]

RECIPES = ("float32", "float16", "dynamic", "int8")


def calibration_frames(dataset: Dataset, contract: PreprocessContract, n: int) -> np.ndarray:
    """The first ``n`` readable images of ``dataset``, preprocessed to float model input."""
    return preprocessed_arrays(dataset, contract, n, what="calibration data")[0]


def make_converter(
    model: Any,
    recipe: str,
    *,
    calibration: np.ndarray | None = None,
    io_type: str = "uint8",
    per_tensor: bool = False,
    allow_float_ops: bool = False,
    static_batch: bool = False,
    ranges: str = "minmax",
    on_sample: Callable[[], None] | None = None,
) -> Any:
    """A configured ``tf.lite.TFLiteConverter`` for one of RECIPES (Keras 3 or tf-keras model).

    ``allow_float_ops`` lets int8 keep some ops in float (selective fallback); ``static_batch``
    traces the model with a batch of exactly 1, so shape arithmetic (``Reshape`` heads) folds to
    constants instead of ``SHAPE`` ops the Edge TPU cannot run; ``on_sample`` is called for every
    calibration image (progress); ``ranges="mse"`` sets int8 activation ranges by least squared
    error on the calibration images instead of their min/max (:mod:`shoplens_convert.ranges`).
    """
    if recipe not in RECIPES:
        raise UsageError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if io_type not in ("uint8", "int8", "float32"):
        raise UsageError(f"io type must be uint8, int8 or float32, got {io_type!r}")
    tf = tensorflow()
    saved_model_dir = getattr(model, "saved_model_dir", None)  # load.SignatureModel
    if saved_model_dir is not None:
        conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    else:
        if static_batch:
            model = _batch_one(model)
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if recipe == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif recipe == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif recipe == "int8":
        if calibration is None or len(calibration) == 0:
            raise DataError("int8 quantization needs calibration images (--calib-data)")
        cal = calibration

        def representative() -> Iterator[list[np.ndarray]]:
            for i in range(len(cal)):
                if on_sample is not None:
                    on_sample()
                yield [cal[i : i + 1]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        if allow_float_ops:
            conv.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS,
            ]
        else:
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_type != "float32":
            conv.inference_input_type = tf.uint8 if io_type == "uint8" else tf.int8
            conv.inference_output_type = tf.uint8 if io_type == "uint8" else tf.int8
        if per_tensor:
            conv._experimental_disable_per_channel = True
        if ranges == "mse":
            from shoplens_convert.ranges import with_mse_ranges

            with_mse_ranges(conv, cal)
    return conv


def _batch_one(model: Any) -> Any:
    """The same model (shared weights) behind an input of batch size exactly 1."""
    from shoplens_convert._tf import keras3, tf_keras

    k = tf_keras() if type(model).__module__.startswith("tf_keras") else keras3()
    spec = model.inputs[0]
    inp = k.Input(batch_shape=(1, *spec.shape[1:]), dtype=spec.dtype)
    return k.Model(inp, model(inp, training=False), name=f"{model.name}_batch1")


def run_converter(what: str, fn: Callable[[], Any]) -> bytes:
    """Run a conversion quietly (it prints to stdout and native stderr); one-line errors."""
    try:
        # the converter prints a SavedModel signature dump to stdout; keep --json output clean
        with quiet_native_stderr(), contextlib.redirect_stdout(io.StringIO()):
            return bytes(fn())
    except ShopLensError:
        raise
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"TFLite conversion ({what}) failed: {msg[:300]}") from None


def quantize(
    model: Any,
    recipe: str,
    *,
    calibration: np.ndarray | None = None,
    io_type: str = "uint8",
    per_tensor: bool = False,
    static_batch: bool = False,
    ranges: str = "minmax",
    show_progress: bool = False,
) -> bytes:
    """Convert a Keras model with one of RECIPES; int8 needs preprocessed calibration frames.

    ``static_batch`` (the Edge TPU target) traces with a batch of 1 and, for int8, hard swish as
    ops the Edge TPU runs (:func:`~shoplens_convert.edgetpu_target.edgetpu_activations`).

    Example:
      >>> tflite = quantize(model, "int8", calibration=x[:300])  # doctest: +SKIP
    """
    from shoplens_convert.edgetpu_target import edgetpu_activations

    n = len(calibration) if calibration is not None and recipe == "int8" else 0
    edgetpu = edgetpu_activations(model) if static_batch and recipe == "int8" else contextlib.nullcontext(0)
    with progress(show_progress and n > 0, "calibrating", n) as bar, edgetpu:
        conv = make_converter(
            model,
            recipe,
            calibration=calibration,
            io_type=io_type,
            per_tensor=per_tensor,
            static_batch=static_batch,
            ranges=ranges,
            on_sample=bar.advance,
        )
        return run_converter(recipe, conv.convert)
