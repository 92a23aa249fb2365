"""Standard TFLite Model Metadata (the ``TFLITE_METADATA`` flatbuffer, file identifier M001).

This is the metadata that MediaPipe Tasks, LiteRT support libraries and Android Studio read:
model name/version/author, the input image's colour space and size, its NormalizationOptions,
value statistics, and the labels as an associated ``TENSOR_AXIS_LABELS`` file, packed as an
uncompressed zip appended to the model. The official writer (``tflite_support`` /
``mediapipe...metadata_writers``) does not import on this stack, so this module writes the tables
of ``metadata_schema.fbs`` directly with the ``flatbuffers`` builder. Slot numbers follow that
schema; the tests parse the result with MediaPipe's own generated reader and load the model in
MediaPipe's ImageClassifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import flatbuffers
import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.errors import ModelError
from shoplens_convert.metadata import set_metadata_entry

__all__ = ["METADATA_NAME", "ModelDescription", "embed_standard_metadata"]

METADATA_NAME = "TFLITE_METADATA"
_IDENTIFIER = b"M001"
_MIN_PARSER_VERSION = "1.0.0"
# enum values from metadata_schema.fbs
_RGB, _GRAYSCALE = 1, 2
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2
_NORMALIZATION_OPTIONS = 1
_TENSOR_AXIS_LABELS = 2


@dataclass(frozen=True)
class ModelDescription:
    name: str
    description: str
    version: str
    author: str = "ShopLens"
    license: str = ""


class _Writer:
    """Just enough of a flatbuffers table writer for metadata_schema.fbs."""

    def __init__(self) -> None:
        self.b = flatbuffers.Builder(1024)

    def string(self, s: str | None) -> int | None:
        return None if s is None else self.b.CreateString(s)

    def offsets(self, items: Sequence[int]) -> int:
        self.b.StartVector(4, len(items), 4)
        for off in reversed(items):
            self.b.PrependUOffsetTRelative(off)
        return self.b.EndVector()

    def floats(self, values: Sequence[float]) -> int:
        return self.b.CreateNumpyVector(np.asarray(values, np.float32))

    def table(self, nslots: int, fields: Sequence[tuple[int, str, object]]) -> int:
        """fields: (slot, kind, value) with kind in offset|int8|uint8|uint32; None values skipped."""
        b = self.b
        b.StartObject(nslots)
        for slot, kind, value in fields:
            if value is None:
                continue
            if kind == "offset":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "int8":
                b.PrependInt8Slot(slot, value, 0)
            elif kind == "uint8":
                b.PrependUint8Slot(slot, value, 0)
            elif kind == "uint32":
                b.PrependUint32Slot(slot, value, 0)
            else:  # pragma: no cover - programming error
                raise ValueError(kind)
        return b.EndObject()


def _metadata_buffer(
    desc: ModelDescription,
    contract: PreprocessContract,
    num_classes: int,
    output: str,
    labels_file: str,
) -> bytes:
    w = _Writer()
    lo, hi = contract.value_range or (0.0, 255.0)
    # input tensor: image properties, normalization, stats
    in_name, in_desc = w.string("image"), w.string(f"Input image. {contract.describe()}")
    size = w.table(2, [(0, "uint32", contract.width), (1, "uint32", contract.height)])
    color = _GRAYSCALE if contract.channels == 1 else _RGB
    props = w.table(2, [(0, "int8", color), (1, "offset", size)])
    in_content = w.table(3, [(0, "uint8", _IMAGE_PROPERTIES), (1, "offset", props)])
    mean, std = w.floats(contract.mean), w.floats(contract.std)
    norm = w.table(2, [(0, "offset", mean), (1, "offset", std)])
    unit = w.table(2, [(0, "uint8", _NORMALIZATION_OPTIONS), (1, "offset", norm)])
    units = w.offsets([unit])
    in_max, in_min = w.floats([hi]), w.floats([lo])
    in_stats = w.table(2, [(0, "offset", in_max), (1, "offset", in_min)])
    in_tensor = w.table(
        7,
        [
            (0, "offset", in_name),
            (1, "offset", in_desc),
            (3, "offset", in_content),
            (4, "offset", units),
            (5, "offset", in_stats),
        ],
    )
    # output tensor: feature properties, labels file, stats
    out_name = w.string("probability" if output == "probabilities" else "logits")
    out_desc = w.string(
        f"{'Probabilities' if output == 'probabilities' else 'Logits'} of the {num_classes} labels."
    )
    feat = w.table(0, [])
    out_content = w.table(3, [(0, "uint8", _FEATURE_PROPERTIES), (1, "offset", feat)])
    f_name, f_desc = w.string(labels_file), w.string("Labels for the classes the model recognises.")
    label_file = w.table(5, [(0, "offset", f_name), (1, "offset", f_desc), (2, "int8", _TENSOR_AXIS_LABELS)])
    out_files = w.offsets([label_file])
    out_stats = None
    if output == "probabilities":
        o_max, o_min = w.floats([1.0]), w.floats([0.0])
        out_stats = w.table(2, [(0, "offset", o_max), (1, "offset", o_min)])
    out_tensor = w.table(
        7,
        [
            (0, "offset", out_name),
            (1, "offset", out_desc),
            (3, "offset", out_content),
            (5, "offset", out_stats),
            (6, "offset", out_files),
        ],
    )
    ins, outs = w.offsets([in_tensor]), w.offsets([out_tensor])
    sg_name = w.string("image_classifier")
    subgraph = w.table(10, [(0, "offset", sg_name), (2, "offset", ins), (3, "offset", outs)])
    subgraphs = w.offsets([subgraph])
    name, description = w.string(desc.name), w.string(desc.description)
    version, author = w.string(desc.version), w.string(desc.author)
    license_ = w.string(desc.license) if desc.license else None
    parser = w.string(_MIN_PARSER_VERSION)
    root = w.table(
        8,
        [
            (0, "offset", name),
            (1, "offset", description),
            (2, "offset", version),
            (3, "offset", subgraphs),
            (4, "offset", author),
            (5, "offset", license_),
            (7, "offset", parser),
        ],
    )
    w.b.Finish(root, file_identifier=_IDENTIFIER)
    return bytes(w.b.Output())


def embed_standard_metadata(
    tflite: bytes,
    *,
    description: ModelDescription,
    contract: PreprocessContract,
    labels: Sequence[str],
    output: str = "probabilities",
    labels_file: str = "labels.txt",
) -> bytes:
    """The model with TFLITE_METADATA set and ``labels_file`` appended as an associated file.

    MediaPipe and the TFLite support library reject per-channel NormalizationOptions for image
    classifiers, so a per-channel contract must be folded into the model first (the pipeline does
    this); here it is refused.
    """
    if contract.per_channel:
        raise ModelError(
            "standard metadata takes one mean and one std for all channels; "
            "fold per-channel normalization into the model first"
        )
    meta = _metadata_buffer(description, contract, len(labels), output, labels_file)
    files = {labels_file: ("\n".join(labels) + "\n").encode("utf-8")}
    return set_metadata_entry(tflite, METADATA_NAME, meta, files=files)
