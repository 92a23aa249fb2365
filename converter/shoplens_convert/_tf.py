"""Import TensorFlow and Keras 3 once, quietly.

TensorFlow's C++ runtime prints several lines to stderr on import and on first device set-up
(oneDNN, CUDA probing) before its log level applies. A CLI whose errors are one line cannot
afford that, so the import and device initialisation run with file descriptor 2 pointed at
/dev/null. Python-level errors still surface as exceptions.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from shoplens.errors import DependencyError
from shoplens.internal.quiet import quiet_native_stderr

_CACHE: dict[str, Any] = {}


def keras3() -> Any:
    """Return the Keras 3 module (``import keras``) with TensorFlow initialised quietly."""
    if "keras" not in _CACHE:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            with quiet_native_stderr():
                import keras
                import tensorflow as tf

                tf.constant(0.0) + 0.0  # first op: device probing happens here, silenced
        except ImportError as exc:
            raise DependencyError(
                f"the converter needs TensorFlow ({exc.name or exc}); "
                "install it with: pip install 'shoplens[convert]'"
            ) from None
        _CACHE["keras"] = keras
        _CACHE["tf"] = tf
    return _CACHE["keras"]


def tensorflow() -> Any:
    keras3()
    return _CACHE["tf"]


def _quiet_import(module: str, what: str, after: Any) -> Any:
    """Import ``module`` once with native stderr silenced, after ``after()`` set up its base."""
    if module not in _CACHE:
        after()
        try:
            with quiet_native_stderr():
                _CACHE[module] = importlib.import_module(module)
        except ImportError:
            raise DependencyError(
                f"pruning and QAT need {what}; install it with: pip install 'shoplens[convert]'"
            ) from None
    return _CACHE[module]


def tf_keras() -> Any:
    """The tf-keras (Keras 2) module, which TFMOT needs."""
    return _quiet_import("tf_keras", "tf-keras", keras3)


def tfmot() -> Any:
    """tensorflow-model-optimization, imported quietly."""
    return _quiet_import("tensorflow_model_optimization", "tensorflow-model-optimization", tf_keras)
