"""Embed ShopLens's own metadata (contract, labels, output kind) into a .tflite flatbuffer.

The SDK reads it back with ``shoplens.tflite_model.read_model_info(...).shoplens_metadata``.
It lives in the flatbuffer's standard ``Model.metadata`` list under the name
``shoplens.contract``, so it travels with the model and any TFLite tool ignores it.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from shoplens.contract import PreprocessContract
from shoplens.errors import ModelError
from shoplens.tflite_model import SHOPLENS_METADATA
from shoplens_convert.flatbuffer import pack_model, parse_model

__all__ = [
    "embed_shoplens_metadata",
    "set_metadata_entry",
    "shoplens_metadata_dict",
    "split_associated_files",
]


def shoplens_metadata_dict(
    contract: PreprocessContract, labels: Sequence[str], *, output: str = "probabilities", **extra: Any
) -> dict[str, Any]:
    if output not in ("probabilities", "logits", "embedding"):
        raise ModelError(f"output kind must be 'probabilities', 'logits' or 'embedding', got {output!r}")
    return {"format": 1, "contract": contract.to_dict(), "labels": list(labels), "output": output, **extra}


def split_associated_files(tflite: bytes) -> tuple[bytes, dict[str, bytes]]:
    """(the flatbuffer, the associated files of the zip appended after it, if any)."""
    end = tflite.rfind(b"PK\x05\x06")
    if end < 0:
        return tflite, {}
    try:
        with zipfile.ZipFile(io.BytesIO(tflite)) as zf:
            infos = zf.infolist()
            files = {i.filename: zf.read(i) for i in infos}
            first = min((i.header_offset for i in infos), default=end)
    except zipfile.BadZipFile:  # the signature bytes were weights, not a zip
        return tflite, {}
    return tflite[:first], files


def set_metadata_entry(
    tflite: bytes, name: str, payload: bytes, *, files: dict[str, bytes] | None = None
) -> bytes:
    """The model with metadata entry ``name`` set to ``payload`` (replacing any old one).

    Associated files (an uncompressed zip after the flatbuffer, which MediaPipe reads) are kept,
    or replaced by ``files`` when given; the zip is written anew so its offsets stay right.
    """
    flat, old_files = split_associated_files(tflite)
    model = parse_model(flat)
    model.buffers = list(model.buffers or [])
    kept = []
    for m in model.metadata or []:
        if (m.name.decode() if isinstance(m.name, bytes) else m.name) == name:
            model.buffers[m.buffer].data = None  # the old payload; indices of other buffers stay
        else:
            kept.append(m)
    buf = schema.BufferT()
    buf.data = np.frombuffer(payload, np.uint8).copy()
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*kept, entry]
    out = io.BytesIO()
    out.write(pack_model(model, len(flat) + len(payload) + 1024))
    attached = old_files if files is None else files
    if attached:
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
            for fname, data in attached.items():
                zf.writestr(fname, data)
    return out.getvalue()


def embed_shoplens_metadata(tflite: bytes, meta: dict[str, Any]) -> bytes:
    """Return a copy of the model with ``meta`` (JSON) as its ``shoplens.contract`` entry."""
    return set_metadata_entry(tflite, SHOPLENS_METADATA, json.dumps(meta, sort_keys=True).encode("utf-8"))
