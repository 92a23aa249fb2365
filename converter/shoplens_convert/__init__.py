"""ShopLens converter: the TensorFlow side (tensorflow, Keras, tf-keras, TFMOT).

May import :mod:`shoplens`; the runtime never imports this package except lazily inside CLI
commands that need it.
"""

import importlib.util as _util

from shoplens.errors import DependencyError as _DependencyError

_missing = [m for m in ("tensorflow", "flatbuffers") if _util.find_spec(m) is None]
if _missing:  # a device with only the runtime: say what to install, before any import fails
    raise _DependencyError(
        f"the converter needs {', '.join(_missing)}; install it with: pip install 'shoplens[convert]'"
    )

from shoplens_convert.evaluate import evaluate_keras  # noqa: E402
from shoplens_convert.load import LoadedModel, find_sidecar_contract, load_keras_model  # noqa: E402
from shoplens_convert.pipeline import ConversionResult, ConvertOptions, convert  # noqa: E402
from shoplens_convert.recipes import Recipe, load_recipe, recipe_names  # noqa: E402

__all__ = [
    "ConversionResult",
    "ConvertOptions",
    "LoadedModel",
    "Recipe",
    "convert",
    "evaluate_keras",
    "find_sidecar_contract",
    "load_keras_model",
    "load_recipe",
    "recipe_names",
]
