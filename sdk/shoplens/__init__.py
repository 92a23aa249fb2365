"""ShopLens: on-device product recognition.

The device runtime. It depends on numpy, OpenCV and a TFLite interpreter only, and never
imports TensorFlow (a test proves it).
"""

from shoplens._version import __version__
from shoplens.contract import ColorOrder, CropMode, Interpolation, PreprocessContract
from shoplens.errors import (
    ConversionError,
    DataError,
    DelegateUnavailableError,
    DriftGateFailed,
    InvalidFrameError,
    ModelError,
    OutputExistsError,
    ShopLensError,
    UsageError,
)
from shoplens.preprocess import InputQuantization, Preprocessor, preprocess, preprocess_batch

__all__ = [
    "ColorOrder",
    "ConversionError",
    "CropMode",
    "DataError",
    "DelegateUnavailableError",
    "DriftGateFailed",
    "InputQuantization",
    "Interpolation",
    "InvalidFrameError",
    "ModelError",
    "OutputExistsError",
    "PreprocessContract",
    "Preprocessor",
    "ShopLensError",
    "UsageError",
    "__version__",
    "preprocess",
    "preprocess_batch",
]
