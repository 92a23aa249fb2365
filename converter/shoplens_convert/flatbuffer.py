"""Pack TFLite models compactly: identical vectors stored once, fused tensor names trimmed.

The TFLite converter writes every vector on its own. Per-channel int8 models repeat many of
them: each quantized tensor carries an int64 zero-point vector, and for symmetric weights these
are all zeros, so a model with 8,000 quantized channels spends 64 KiB on zeros. FlatBuffers lets
any number of tables point at one vector, and TFLite only reads them, so the packer keeps one
copy of each distinct vector. It also trims the converter's fused tensor names
(``a/b/conv;a/b/bn;...``) to their first part. The graph, the weights and every value the
interpreter reads are unchanged; the tests compare outputs before and after.
"""

from __future__ import annotations

from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from shoplens.errors import ModelError

__all__ = ["compact_model", "pack_model", "parse_model"]


class _DedupBuilder(flatbuffers.Builder):  # type: ignore[misc]
    """A builder that stores each distinct numpy vector once and points repeats at it."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._seen: dict[tuple[str, bytes], int] = {}

    def CreateNumpyVector(self, x: np.ndarray) -> int:
        key = (x.dtype.str, x.tobytes())
        off = self._seen.get(key)
        if off is None:
            off = super().CreateNumpyVector(x)
            self._seen[key] = off
        return off


def parse_model(tflite: bytes) -> Any:
    try:
        return schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    except Exception as exc:
        raise ModelError(f"cannot parse the TFLite flatbuffer: {exc}") from None


def pack_model(model: Any, size_hint: int = 1 << 20) -> bytes:
    """Serialize a ``schema.ModelT`` with shared identical vectors."""
    builder = _DedupBuilder(size_hint)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def compact_model(tflite: bytes) -> bytes:
    """The same model, packed with shared vectors and trimmed fused tensor names."""
    model = parse_model(tflite)
    for sg in model.subgraphs or []:
        for t in sg.tensors or []:
            name = t.name.decode() if isinstance(t.name, bytes) else (t.name or "")
            if ";" in name:
                t.name = name.split(";", 1)[0]
    return pack_model(model, len(tflite))
