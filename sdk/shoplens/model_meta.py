"""Labels and preprocessing contract of a model: from options, metadata, or files beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoplens.contract import ColorOrder, CropMode, Interpolation, PreprocessContract
from shoplens.data.datasets import read_labels_file
from shoplens.errors import DataError, ModelError
from shoplens.options import ImageClassifierOptions, VisionTaskOptions
from shoplens.tflite_model import ModelInfo, TensorInfo

__all__ = ["contract_from_standard_metadata", "resolve_contract", "resolve_labels"]


def resolve_labels(
    opts: ImageClassifierOptions, meta: dict[str, Any] | None, info: ModelInfo, num_classes: int
) -> tuple[str, ...]:
    if opts.labels is not None:
        names = opts.labels
        source = "options"
    elif opts.labels_path is not None:
        names = read_labels_file(Path(opts.labels_path))
        source = str(opts.labels_path)
    elif meta and meta.get("labels"):
        names = tuple(str(x) for x in meta["labels"])
        source = "model metadata"
    elif "labels.txt" in info.associated_files:
        text = info.associated_files["labels.txt"].decode("utf-8", errors="replace")
        names = tuple(x.strip() for x in text.splitlines() if x.strip())
        source = "labels.txt in the model"
    else:
        p = opts.base_options.model_asset_path
        side = Path(p).parent / "labels.txt" if p is not None else None
        if side is not None and side.is_file():
            names = read_labels_file(side)
            source = str(side)
        else:
            names = tuple(str(i) for i in range(num_classes))
            source = "class indices"
    if len(names) != num_classes:
        raise DataError(
            f"labels from {source} list {len(names)} names but the model outputs {num_classes} scores"
        )
    return names


def contract_from_standard_metadata(std: dict[str, Any] | None, inp: TensorInfo) -> PreprocessContract | None:
    """A contract for a model that has only standard TFLite metadata (e.g. from another toolchain).

    Standard metadata gives NormalizationOptions and the colour space but no crop or resize rule;
    this follows MediaPipe's ImageClassifier, which stretches the whole frame with bilinear resize on
    its own sampling grid (``linear-mediapipe``), so such a model gets MediaPipe's input tensor.
    """
    if not std or not std.get("mean") or not std.get("std"):
        return None
    _, h, w, ch = inp.shape
    return PreprocessContract(
        h, w, ch, color_order=ColorOrder.GRAY if ch == 1 else ColorOrder.RGB, mean=tuple(std["mean"]),
        std=tuple(std["std"]), interpolation=Interpolation.LINEAR_MEDIAPIPE, crop=CropMode.STRETCH,
    )  # fmt: skip


def resolve_contract(
    opts: VisionTaskOptions, meta: dict[str, Any] | None, inp: TensorInfo,
    standard: dict[str, Any] | None = None,
) -> PreprocessContract:  # fmt: skip
    if opts.contract is not None:
        c = opts.contract
    elif meta and "contract" in meta:
        c = PreprocessContract.from_dict(meta["contract"])
    elif (from_std := contract_from_standard_metadata(standard, inp)) is not None:
        c = from_std
    else:
        raise ModelError(
            "the model carries no preprocessing contract (neither ShopLens nor standard TFLite "
            "NormalizationOptions metadata); convert it with 'shoplens convert' "
            "or pass contract=PreprocessContract(...) in the options"
        )
    if opts.crop is not None:
        c = c.replace(crop=opts.crop)
    _, h, w, ch = inp.shape
    if (h, w, ch) != (c.height, c.width, c.channels):
        raise ModelError(
            f"contract says {c.height}x{c.width}x{c.channels} but the model input is {h}x{w}x{ch}"
        )
    return c
