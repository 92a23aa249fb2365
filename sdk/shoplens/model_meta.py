"""Labels and preprocessing contract of a model: from options, metadata, or files beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoplens.contract import PreprocessContract
from shoplens.data.datasets import read_labels_file
from shoplens.errors import DataError, ModelError
from shoplens.options import ImageClassifierOptions
from shoplens.tflite_model import ModelInfo, TensorInfo

__all__ = ["resolve_contract", "resolve_labels"]


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


def resolve_contract(
    opts: ImageClassifierOptions, meta: dict[str, Any] | None, inp: TensorInfo
) -> PreprocessContract:
    if opts.contract is not None:
        c = opts.contract
    elif meta and "contract" in meta:
        c = PreprocessContract.from_dict(meta["contract"])
    else:
        raise ModelError(
            "the model carries no ShopLens preprocessing contract; convert it with 'shoplens convert' "
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
