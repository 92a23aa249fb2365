"""Read a ``.tflite`` flatbuffer without an interpreter: tensors, ops, metadata.

A small, bounds-checked flatbuffer reader (no dependency beyond the standard library). Every
offset is checked against the buffer before it is followed, so a truncated or corrupted model
gives :class:`ModelError` here instead of reaching the interpreter's C++ code.

Used by ``shoplens inspect``, by the Classifier to find the labels and the preprocessing
contract, and by the Edge TPU pre-flight.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoplens._flatbuffer import Buf as _Buf
from shoplens._flatbuffer import Table as _Table
from shoplens._opnames import BUILTIN_OPS
from shoplens.errors import ModelError

__all__ = [
    "SHOPLENS_METADATA",
    "TFLITE_METADATA",
    "ModelInfo",
    "OpInfo",
    "TensorInfo",
    "read_model_info",
]

SHOPLENS_METADATA = "shoplens.contract"
STANDARD_METADATA = "TFLITE_METADATA"  # our own Model.metadata entry: JSON (contract + labels)
TFLITE_METADATA = "TFLITE_METADATA"  # the standard TFLite Model Metadata entry
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

# TensorType enum of the TFLite schema
TENSOR_TYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4",
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: str
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    buffer: int = 0

    @property
    def quantized(self) -> bool:
        return bool(self.scales)

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.dynamic:
            d["shape_signature"] = list(self.shape_signature)
        if self.scales:
            if len(self.scales) == 1:
                d["quantization"] = {"scale": self.scales[0], "zero_point": self.zero_points[0]}
            else:
                d["quantization"] = {"per_channel": len(self.scales)}
        return d


@dataclass(frozen=True)
class OpInfo:
    index: int
    name: str
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    custom: bool = False
    options: _Table | None = field(default=None, repr=False, compare=False)


@dataclass
class ModelInfo:
    """What a .tflite file declares, read without running it."""

    size: int
    version: int
    description: str
    tensors: list[TensorInfo]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    ops: list[OpInfo]
    metadata: dict[str, bytes]
    associated_files: dict[str, bytes]
    buffer_sizes: list[int] = field(default_factory=list)
    subgraphs: int = 1
    _buffers: list[_Table] = field(default_factory=list, repr=False, compare=False)

    def constant_data(self, tensor: TensorInfo) -> bytes | None:
        """The bytes of a constant tensor (weights, axes, paddings), or None for an activation."""
        if not 0 < tensor.buffer < len(self._buffers):
            return None
        b = self._buffers[tensor.buffer]
        data = b.vector_bytes(0) if b.has(0) else b""
        if not data and b.scalar(2, "u64"):  # large models keep buffers after the flatbuffer
            off, n = b.scalar(1, "u64"), b.scalar(2, "u64")
            b.buf._need(off, n)
            data = b.buf.data[off : off + n]
        return data or None

    @property
    def op_histogram(self) -> dict[str, int]:
        return dict(Counter(op.name for op in self.ops).most_common())

    @property
    def has_edgetpu_op(self) -> bool:
        return any(op.name == EDGETPU_CUSTOM_OP for op in self.ops)

    @property
    def shoplens_metadata(self) -> dict[str, Any] | None:
        raw = self.metadata.get(SHOPLENS_METADATA)
        if raw is None:
            return None
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelError(f"the model's {SHOPLENS_METADATA} metadata is not valid JSON") from None
        if not isinstance(obj, dict):
            raise ModelError(f"the model's {SHOPLENS_METADATA} metadata is not a JSON object")
        return obj

    @property
    def standard_metadata(self) -> dict[str, Any] | None:
        """The parts of standard TFLite Model Metadata the SDK uses, or None when absent.

        Keys: name, version, mean, std (input NormalizationOptions, lists or None) and
        color_space ("RGB", "GRAYSCALE" or None). Slot numbers follow metadata_schema.fbs.
        """
        raw = self.metadata.get(STANDARD_METADATA)
        if raw is None or len(raw) < 8:
            return None
        if raw[4:8] != b"M001":
            raise ModelError("the model's TFLITE_METADATA has no M001 identifier; it is corrupt")
        buf = _Buf(bytes(raw))
        root = _Table(buf, buf.u32(0))
        out: dict[str, Any] = {"name": root.string(0), "version": root.string(2), "mean": None, "std": None,
                               "color_space": None}  # fmt: skip
        subgraphs = root.vector_tables(3)
        inputs = subgraphs[0].vector_tables(2) if subgraphs else []
        if not inputs:
            return out
        tensor = inputs[0]
        content = tensor.table(3)
        if content is not None and content.scalar(0, "u8") == 2:  # ImageProperties
            props = content.table(1)
            if props is not None:
                out["color_space"] = {1: "RGB", 2: "GRAYSCALE"}.get(props.scalar(0, "i8"))
        for unit in tensor.vector_tables(4):
            if unit.scalar(0, "u8") == 1:  # NormalizationOptions
                norm = unit.table(1)
                if norm is not None:
                    out["mean"], out["std"] = norm.vector_f32(0), norm.vector_f32(1)
                break
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "schema_version": self.version,
            "description": self.description,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "ops": len(self.ops),
            "op_histogram": self.op_histogram,
            "edgetpu_custom_op": self.has_edgetpu_op,
            "metadata": sorted(self.metadata),
            "associated_files": sorted(self.associated_files),
        }


_ITEMSIZE = {"float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "bool": 1, "int16": 2,
             "int8": 1, "float64": 8, "uint64": 8, "uint32": 4, "uint16": 2}  # fmt: skip
_ZP_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}
MAX_TENSOR_BYTES = 1 << 30  # a declared activation larger than 1 GiB is refused before allocation


def _check_tensor(t: TensorInfo, tab: _Table, sizes: list[int], where: str) -> None:
    """Refuse what the interpreter would abort or overflow on (found by fuzzing, docs/reliability.md)."""
    if any(d < 0 for d in t.shape):
        raise ModelError(f"{where}: tensor {t.index} has a negative dimension {list(t.shape)}")
    n = 1
    for d in t.shape:
        n *= d
    nbytes = n * _ITEMSIZE.get(t.dtype, 1)
    if not 0 <= t.buffer < len(sizes):
        raise ModelError(f"{where}: tensor {t.index} refers to buffer {t.buffer} of {len(sizes)}")
    const = sizes[t.buffer]
    if const and t.dtype in _ITEMSIZE and const != nbytes and not tab.has(6):  # field 6: sparse encoding
        raise ModelError(
            f"{where}: tensor {t.index} {list(t.shape)} {t.dtype} needs {nbytes} bytes "
            f"but its buffer holds {const}"
        )
    if nbytes > MAX_TENSOR_BYTES:
        raise ModelError(
            f"{where}: tensor {t.index} declares {list(t.shape)} ({nbytes / 2**30:.1f} GiB); refused"
        )
    q = tab.table(4)
    if q is None:
        return
    scales, zps = q.vector_f32(2), q.vector_i64(3)
    if not scales and not zps:
        return
    if len(scales) != len(zps) or not scales:
        raise ModelError(
            f"{where}: tensor {t.index} has {len(scales)} quantization scales and {len(zps)} zero points"
        )
    if any(not (s > 0 and s < float("inf")) for s in scales):
        raise ModelError(f"{where}: tensor {t.index} has a quantization scale that is not finite and > 0")
    lo, hi = _ZP_RANGE.get(t.dtype, (-(1 << 31), (1 << 31) - 1))
    if any(not lo <= z <= hi for z in zps):
        raise ModelError(f"{where}: tensor {t.index} has a zero point outside the {t.dtype} range")
    if len(scales) > 1:
        dim = q.scalar(6, "i32")
        if not 0 <= dim < len(t.shape) or t.shape[dim] != len(scales):
            raise ModelError(
                f"{where}: tensor {t.index} has {len(scales)} per-channel scales for shape {list(t.shape)}"
            )


def _tensor(i: int, t: _Table) -> TensorInfo:
    shape = tuple(t.vector_i32(0))
    sig = tuple(t.vector_i32(7)) or shape
    dtype = TENSOR_TYPES.get(t.scalar(1, "i8"), f"type{t.scalar(1, 'i8')}")
    q = t.table(4)
    scales: tuple[float, ...] = ()
    zps: tuple[int, ...] = ()
    if q is not None:
        scales = tuple(q.vector_f32(2))
        zps = tuple(q.vector_i64(3))
        if len(zps) < len(scales):
            zps = zps + (0,) * (len(scales) - len(zps))
    return TensorInfo(i, t.string(3) or f"tensor{i}", shape, sig, dtype, scales, zps, t.scalar(2, "u32"))


def _associated_files(data: bytes) -> dict[str, bytes]:
    """Associated files (e.g. labels) that the metadata populator appends as a zip archive."""
    if b"PK\x05\x06" not in data[-65600:]:
        return {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {n: zf.read(n) for n in zf.namelist() if zf.getinfo(n).file_size < 50_000_000}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return {}


def read_model_info(model: str | Path | bytes) -> ModelInfo:
    """Parse a .tflite file or its bytes. Raises ModelError for anything malformed."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        where = "model bytes"
    else:
        p = Path(model)
        if not p.exists():
            raise ModelError(f"model {p} does not exist")
        if p.is_dir():
            raise ModelError(f"{p} is a directory, not a .tflite file")
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read {p}: {exc.strerror or exc}") from None
        where = str(p)
    if len(data) == 0:
        raise ModelError(f"{where} is empty (0 bytes)")
    if len(data) < 16 or data[4:8] != b"TFL3":
        raise ModelError(
            f"{where} is not a TFLite model (no TFL3 identifier); is it truncated or another format?"
        )
    buf = _Buf(data)
    try:
        root = _Table(buf, buf.u32(0))
        version = root.scalar(0, "u32")
        codes = []
        for oc in root.vector_tables(1):
            code = max(oc.scalar(0, "i8"), oc.scalar(3, "i32"))
            custom = oc.string(1)
            name = custom if code == 32 and custom else BUILTIN_OPS.get(code, f"BUILTIN_{code}")
            codes.append((name, oc.scalar(2, "i32", 1), code == 32))
        subgraphs = root.vector_tables(2)
        if not subgraphs:
            raise ModelError(f"{where} has no subgraph")
        sg = subgraphs[0]
        tensor_tables = sg.vector_tables(0)
        tensors = [_tensor(i, t) for i, t in enumerate(tensor_tables)]

        def pick(indices: list[int]) -> list[TensorInfo]:
            for i in indices:
                if not 0 <= i < len(tensors):
                    raise ModelError(f"{where} refers to tensor {i} but has {len(tensors)}")
            return [tensors[i] for i in indices]

        inputs, outputs = pick(sg.vector_i32(1)), pick(sg.vector_i32(2))
        ops = []
        for k, op in enumerate(sg.vector_tables(3)):
            idx = op.scalar(0, "u32")
            if idx >= len(codes):
                raise ModelError(f"{where}: operator {k} uses opcode {idx} of {len(codes)}")
            op_name, ver, is_custom = codes[idx]
            ops.append(
                OpInfo(k, op_name, ver, tuple(op.vector_i32(1)), tuple(op.vector_i32(2)), is_custom,
                       op.table(4))
            )
        buffers = root.vector_tables(4)
        sizes = []
        for b in buffers:
            n = b._vector(0, 1)[1] if b.has(0) else 0
            sizes.append(n if n else b.scalar(2, "u64"))
        for ti, tt in zip(tensors, tensor_tables, strict=True):
            _check_tensor(ti, tt, sizes, where)
        metadata: dict[str, bytes] = {}
        for m in root.vector_tables(6):
            name = m.string(0) or ""
            bi = m.scalar(1, "u32")
            if bi < len(buffers):
                metadata[name] = buffers[bi].vector_bytes(0)
        description = root.string(3) or ""
    except ModelError:
        raise
    except (struct.error, RecursionError, MemoryError, OverflowError) as exc:
        raise ModelError(f"{where} is corrupt: {exc}") from None
    return ModelInfo(
        size=len(data),
        version=version,
        description=description,
        tensors=tensors,
        inputs=inputs,
        outputs=outputs,
        ops=ops,
        metadata=metadata,
        associated_files=_associated_files(data),
        buffer_sizes=sizes,
        subgraphs=len(subgraphs),
        _buffers=buffers,
    )
