"""ShopLens: on-device product recognition.

The device runtime. It depends on numpy, OpenCV and a TFLite interpreter only, and never imports
TensorFlow; the optional engines (Apache Beam, the ANN search library) are imported only by their
own modules. The public API is importable from here, and loaded when first used, so
``import shoplens`` stays fast:

    >>> from shoplens import Classifier, QualityOptions
    >>> with Classifier.create_from_model_path("model.tflite",
    ...                                        quality=QualityOptions("reject")) as clf:  # doctest: +SKIP
    ...     print(clf.classify(frame_bgr).top)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shoplens._version import __version__

_EXPORTS: dict[str, tuple[str, ...]] = {
    "shoplens.classifier": ("Classifier",),
    "shoplens.pool": ("ClassifierPool",),
    "shoplens.embedder": ("Embedder",),
    "shoplens.catalog": (
        "CatalogIndex", "Product", "SearchHit", "add_products", "build_index", "index_from_vectors",
        "remove_products",
    ),
    "shoplens.options": (
        "BaseOptions", "ClassifierOptions", "ImageClassifierOptions", "ImageEmbedderOptions", "RunningMode",
        "SmoothingOptions", "VisionTaskOptions",
    ),
    "shoplens.results": ("Category", "ClassificationResult", "EmbeddingResult", "StreamStats", "Timing"),
    "shoplens.quality": ("QualityOptions", "QualityPolicy", "QualityVerdict"),
    "shoplens.colour": ("ColourOptions", "ProductColour"),
    "shoplens.open_set": ("OpenSetOptions", "OpenSetProfile"),
    "shoplens.runtime": ("Backend", "CpuKernels", "Delegate"),
    "shoplens.contract": ("ColorOrder", "CropMode", "Interpolation", "PreprocessContract"),
    "shoplens.preprocess": (
        "FrameView", "InputQuantization", "Preprocessor", "preprocess", "preprocess_batch",
    ),
    "shoplens.bundle": ("verify_bundle",),
    "shoplens.bundle_writer": ("write_bundle",),
    "shoplens.errors": (
        "BackendUnavailableError", "ConversionError", "DataError", "DelegateUnavailableError",
        "DependencyError", "DriftGateFailed", "InvalidFrameError", "ModelError", "OutputExistsError",
        "ShopLensError", "UsageError",
    ),
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "BaseOptions",
    "CatalogIndex",
    "Category",
    "ClassificationResult",
    "Classifier",
    "ClassifierOptions",
    "ClassifierPool",
    "ColorOrder",
    "ColourOptions",
    "ConversionError",
    "CpuKernels",
    "CropMode",
    "DataError",
    "Delegate",
    "DelegateUnavailableError",
    "DependencyError",
    "DriftGateFailed",
    "Embedder",
    "EmbeddingResult",
    "FrameView",
    "ImageClassifierOptions",
    "ImageEmbedderOptions",
    "InputQuantization",
    "Interpolation",
    "InvalidFrameError",
    "ModelError",
    "OpenSetOptions",
    "OpenSetProfile",
    "OutputExistsError",
    "PreprocessContract",
    "Preprocessor",
    "Product",
    "ProductColour",
    "QualityOptions",
    "QualityPolicy",
    "QualityVerdict",
    "RunningMode",
    "SearchHit",
    "ShopLensError",
    "SmoothingOptions",
    "StreamStats",
    "Timing",
    "UsageError",
    "VisionTaskOptions",
    "__version__",
    "add_products",
    "build_index",
    "index_from_vectors",
    "preprocess",
    "preprocess_batch",
    "remove_products",
    "verify_bundle",
    "write_bundle",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'shoplens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # static analysers and IDEs see the names eagerly
    from shoplens.bundle import verify_bundle
    from shoplens.bundle_writer import write_bundle
    from shoplens.catalog import (
        CatalogIndex,
        Product,
        SearchHit,
        add_products,
        build_index,
        index_from_vectors,
        remove_products,
    )
    from shoplens.classifier import Classifier
    from shoplens.colour import ColourOptions, ProductColour
    from shoplens.contract import ColorOrder, CropMode, Interpolation, PreprocessContract
    from shoplens.embedder import Embedder
    from shoplens.errors import (
        BackendUnavailableError,
        ConversionError,
        DataError,
        DelegateUnavailableError,
        DependencyError,
        DriftGateFailed,
        InvalidFrameError,
        ModelError,
        OutputExistsError,
        ShopLensError,
        UsageError,
    )
    from shoplens.open_set import OpenSetOptions, OpenSetProfile
    from shoplens.options import (
        BaseOptions,
        ClassifierOptions,
        ImageClassifierOptions,
        ImageEmbedderOptions,
        RunningMode,
        SmoothingOptions,
        VisionTaskOptions,
    )
    from shoplens.pool import ClassifierPool
    from shoplens.preprocess import FrameView, InputQuantization, Preprocessor, preprocess, preprocess_batch
    from shoplens.quality import QualityOptions, QualityPolicy, QualityVerdict
    from shoplens.results import Category, ClassificationResult, EmbeddingResult, StreamStats, Timing
    from shoplens.runtime import Backend, CpuKernels, Delegate
