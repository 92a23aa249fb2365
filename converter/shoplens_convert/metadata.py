"""Embed ShopLens's own metadata (contract, labels, output kind) into a .tflite flatbuffer.

The SDK reads it back with ``shoplens.tflite_model.read_model_info(...).shoplens_metadata``.
It lives in the flatbuffer's standard ``Model.metadata`` list under the name
``shoplens.contract``, so it travels with the model and any TFLite tool ignores it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from shoplens.contract import PreprocessContract
from shoplens.errors import ModelError
from shoplens.tflite_model import SHOPLENS_METADATA

__all__ = ["embed_shoplens_metadata", "shoplens_metadata_dict"]


def shoplens_metadata_dict(
    contract: PreprocessContract, labels: Sequence[str], *, output: str = "probabilities", **extra: Any
) -> dict[str, Any]:
    if output not in ("probabilities", "logits"):
        raise ModelError(f"output kind must be 'probabilities' or 'logits', got {output!r}")
    return {"format": 1, "contract": contract.to_dict(), "labels": list(labels), "output": output, **extra}


def embed_shoplens_metadata(tflite: bytes, meta: dict[str, Any]) -> bytes:
    """Return a copy of the model with ``meta`` (JSON) as its ``shoplens.contract`` entry."""
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    except Exception as exc:
        raise ModelError(f"cannot parse the TFLite flatbuffer: {exc}") from None
    payload = json.dumps(meta, sort_keys=True).encode("utf-8")
    buf = schema.BufferT()
    buf.data = np.frombuffer(payload, np.uint8).copy()
    model.buffers = list(model.buffers or [])
    metadata = [m for m in (model.metadata or []) if (m.name or b"") != SHOPLENS_METADATA.encode()]
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = SHOPLENS_METADATA
    entry.buffer = len(model.buffers) - 1
    metadata.append(entry)
    model.metadata = metadata
    builder = flatbuffers.Builder(len(tflite) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
