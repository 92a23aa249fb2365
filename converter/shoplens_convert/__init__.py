"""ShopLens converter: the TensorFlow side (tensorflow, Keras, tf-keras, TFMOT).

May import :mod:`shoplens`; the runtime never imports this package except lazily inside CLI
commands that need it.
"""

from shoplens_convert.evaluate import evaluate_keras
from shoplens_convert.load import LoadedModel, find_sidecar_contract, load_keras_model
from shoplens_convert.pipeline import ConversionResult, ConvertOptions, convert
from shoplens_convert.recipes import Recipe, load_recipe, recipe_names

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
