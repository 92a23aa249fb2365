"""Edge TPU pre-flight: which ops of a ``.tflite`` will map, read from the file, no compiler needed.

Each op, in execution order, gets a verdict: it maps to the Edge TPU, or it falls back to the
CPU with one reason (unsupported op, unsupported parameters, dynamic shape, too many non-trivial
dimensions, not quantized, op version too new). The compiler partitions the graph only once, so
the TPU segment ends at the first op that cannot map: every op after it runs on the CPU, even
one that could map. The summary gives the share of ops and of multiply-accumulates (MACs) that
map. See :mod:`shoplens.edgetpu.ops` for the sources of the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.edgetpu.ops import FUSED_ACTIVATIONS, KNOWN_REJECTIONS, LIMITS, MAX_VERSION
from shoplens.tflite_model import EDGETPU_CUSTOM_OP, ModelInfo, OpInfo, TensorInfo, read_model_info

__all__ = ["OpVerdict", "Preflight", "preflight"]

MAPPED = "mapped"
CATEGORIES = (
    MAPPED,
    "unsupported op",
    "unsupported parameters",
    "dynamic shape",
    "too many dimensions",
    "not quantized",
    "op version too new",
    "after the TPU segment",
)
_QUANT_TYPES = {"int8", "uint8"}
_CONST_OK_TYPES = {"int8", "uint8", "int32"}  # weights, biases, axes, paddings, shapes


@dataclass
class OpVerdict:
    index: int
    op: str
    version: int
    category: str
    reason: str = ""
    macs: int = 0
    note: str = ""

    @property
    def maps(self) -> bool:
        return self.category == MAPPED

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "op": self.op, "version": self.version,
                             "maps": self.maps, "category": self.category, "macs": self.macs}  # fmt: skip
        if self.reason:
            d["reason"] = self.reason
        if self.note:
            d["note"] = self.note
        return d


@dataclass
class Preflight:
    model: str
    ops: list[OpVerdict]
    segment_end: int | None  # index of the first op that runs on the CPU; None when all map
    model_errors: list[str] = field(default_factory=list)  # the compiler would refuse the file

    @property
    def mapped_ops(self) -> int:
        return sum(v.maps for v in self.ops)

    @property
    def op_share(self) -> float:
        return self.mapped_ops / len(self.ops) if self.ops else 0.0

    @property
    def mac_share(self) -> float:
        total = sum(v.macs for v in self.ops)
        return sum(v.macs for v in self.ops if v.maps) / total if total else self.op_share

    @property
    def fully_mapped(self) -> bool:
        return not self.model_errors and self.segment_end is None and bool(self.ops)

    @property
    def blocker(self) -> OpVerdict | None:
        return None if self.segment_end is None else self.ops[self.segment_end]

    def summary(self) -> str:
        if self.model_errors:
            return f"the Edge TPU compiler will refuse this model: {self.model_errors[0]}"
        head = (
            f"{self.mapped_ops} of {len(self.ops)} ops ({100 * self.op_share:.1f} %) and "
            f"{100 * self.mac_share:.1f} % of MACs map to the Edge TPU"
        )
        b = self.blocker
        if b is None:
            return head + ": the whole model runs on the Edge TPU"
        return (
            f"{head}; the TPU segment ends at op {b.index} ({b.op}: {b.category}: {b.reason}), "
            f"and the {len(self.ops) - b.index} ops from there run on the CPU"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fully_mapped": self.fully_mapped,
            "ops_total": len(self.ops),
            "ops_mapped": self.mapped_ops,
            "op_share": round(self.op_share, 6),
            "mac_share": round(self.mac_share, 6),
            "macs_total": sum(v.macs for v in self.ops),
            "segment_end": self.segment_end,
            "model_errors": self.model_errors,
            "summary": self.summary(),
            "ops": [v.to_dict() for v in self.ops],
        }


# -- per-op rules -----------------------------------------------------------------------------
def _nontrivial_outer(shape: tuple[int, ...]) -> bool:
    """More than the 3 innermost dimensions larger than 1."""
    return any(d > 1 for d in shape[:-3])


def _one_dimensional(shape: tuple[int, ...]) -> bool:
    return sum(d > 1 for d in shape) <= 1


def _const_ints(info: ModelInfo, t: TensorInfo) -> np.ndarray | None:
    data = info.constant_data(t)
    if data is None or t.dtype not in ("int32", "int64"):
        return None
    return np.frombuffer(data, np.int32 if t.dtype == "int32" else np.int64)


def _activation(op: OpInfo, field_index: int) -> str:
    if op.options is None:
        return "none"
    return FUSED_ACTIVATIONS.get(op.options.scalar(field_index, "i8"), "unknown")


def _reduction_problem(info: ModelInfo, op: OpInfo) -> str:
    data, axes_t = info.tensors[op.inputs[0]], info.tensors[op.inputs[1]]
    raw_axes = _const_ints(info, axes_t)
    if raw_axes is None:
        return "the reduction axes are not a constant"
    rank = len(data.shape)
    axes = [(int(a) + rank) % rank for a in raw_axes]
    if 0 in axes and rank > 1:
        return "reduces along the batch dimension"
    if rank - 1 in axes and data.shape[-1] % 4:
        return f"reduces along z (channels) with z = {data.shape[-1]}, not a multiple of 4"
    return ""


def _param_problem(info: ModelInfo, op: OpInfo) -> str:
    """The documented limitation this op breaks, or ''."""
    o = op.options
    name = op.name
    ins = [info.tensors[i] for i in op.inputs if i >= 0]
    outs = [info.tensors[i] for i in op.outputs]
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D") and o is not None:
        fw, fh = (4, 5) if name == "CONV_2D" else (5, 6)
        dw, dh = o.scalar(fw, "i32", 1), o.scalar(fh, "i32", 1)
        if dw != dh:
            return f"dilation {dw} in x but {dh} in y (must be equal)"
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        act = _activation(op, 5)
        if act != "none":
            return f"fused activation {act} (pooling must have none)"
    if name == "CONCATENATION":
        act = _activation(op, 1)
        if act != "none":
            return f"fused activation {act} (concatenation must have none)"
        consts = [t for t in ins if info.constant_data(t) is not None]
        if consts:
            data = info.constant_data(consts[0]) or b""
            if len(ins) != 2 or any(data):
                return "a constant input that is not a zero pad between exactly 2 inputs"
    if name == "FULLY_CONNECTED":
        if o is not None and o.scalar(1, "i8") != 0:
            return "weights in a non-default (shuffled) format"
        if outs and not _one_dimensional(outs[0].shape):
            return f"output {list(outs[0].shape)} is not one-dimensional"
    if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"):
        return _reduction_problem(info, op)
    if name == "PAD" and len(ins) > 1:
        pads = _const_ints(info, ins[1])
        if pads is None:
            return "the paddings are not a constant"
        if pads.size >= 2 and (pads[0] or pads[1]) and len(ins[0].shape) == 4:
            return "pads the batch dimension"
    if name == "PACK" and o is not None and o.scalar(1, "i32") == 0:
        return "packs along the batch dimension"
    if name == "SPLIT" and ins:
        axis = _const_ints(info, ins[0])
        if axis is not None and axis.size and int(axis[0]) == 0:
            return "splits along the batch dimension"
    if name == "SOFTMAX" and ins:
        shape = ins[0].shape
        if not _one_dimensional(shape):
            return f"input {list(shape)} is not one-dimensional"
        if int(np.prod(shape)) > 16000:
            return f"input has {int(np.prod(shape))} elements (max 16,000)"
    if name == "STRIDED_SLICE" and len(ins) > 3:
        strides = _const_ints(info, ins[3])
        if strides is None or np.any(strides != 1):
            return "strides other than 1"
        if o is not None and (o.scalar(2, "i32") or o.scalar(3, "i32")):
            return "ellipsis or new-axis mask set"
    if name == "PRELU" and len(ins) > 1 and not _one_dimensional(ins[1].shape):
        return f"alpha {list(ins[1].shape)} has more than one non-trivial dimension"
    return ""


def _macs(info: ModelInfo, op: OpInfo) -> int:
    try:
        out = info.tensors[op.outputs[0]].shape
        if op.name in ("CONV_2D", "TRANSPOSE_CONV"):
            w = info.tensors[op.inputs[1]].shape  # (O, kh, kw, I)
            ref = out if op.name == "CONV_2D" else info.tensors[op.inputs[2]].shape
            return int(np.prod(ref)) * w[1] * w[2] * w[3]
        if op.name == "DEPTHWISE_CONV_2D":
            w = info.tensors[op.inputs[1]].shape  # (1, kh, kw, O)
            return int(np.prod(out)) * w[1] * w[2]
        if op.name == "FULLY_CONNECTED":
            w = info.tensors[op.inputs[1]].shape  # (O, I)
            return int(np.prod(out)) * w[-1]
    except (IndexError, ValueError):
        return 0
    return 0


def _verdict(info: ModelInfo, op: OpInfo) -> OpVerdict:
    v = OpVerdict(op.index, op.name, op.version, MAPPED, macs=_macs(info, op))
    if op.custom and op.name == EDGETPU_CUSTOM_OP:
        v.note = "already compiled for the Edge TPU"
        return v
    if op.name not in LIMITS:
        v.category, v.reason = (
            "unsupported op",
            f"{op.name} is not in the Edge TPU's supported-operations table",
        )
        return v
    top = MAX_VERSION.get(op.name)
    if top is not None and op.version > top:
        ref = KNOWN_REJECTIONS.get((op.name, op.version))
        v.category = "op version too new"
        v.reason = f"version {op.version}; the frozen compiler (v16) parses {op.name} up to version {top}" + (
            f" ({ref})" if ref else ""
        )
        return v
    tensors = [info.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]
    for t in tensors:
        if t.dynamic:
            v.category, v.reason = "dynamic shape", f"tensor {t.name!r} has shape {list(t.shape_signature)}"
            return v
    for t in tensors:
        if info.constant_data(t) is None and _nontrivial_outer(t.shape):
            v.category = "too many dimensions"
            v.reason = f"tensor {t.name!r} {list(t.shape)} has non-trivial dimensions beyond the 3 innermost"
            return v
    for t in tensors:
        const = info.constant_data(t) is not None
        allowed = _CONST_OK_TYPES if const else _QUANT_TYPES
        if t.dtype not in allowed or (t.dtype in _QUANT_TYPES and not t.quantized):
            v.category, v.reason = "not quantized", f"tensor {t.name!r} is {t.dtype}"
            return v
    problem = _param_problem(info, op)
    if problem:
        v.category, v.reason = "unsupported parameters", problem
        return v
    if op.name.startswith("RESIZE_"):
        v.note = "the compiler may keep a resize on the CPU to avoid precision loss"
    return v


def preflight(model: str | Path | bytes | ModelInfo) -> Preflight:
    """Predict the Edge TPU compiler's mapping of ``model`` (a path, bytes or parsed info).

    The first problem found is the headline: a float model is not quantized at all (the usual
    reason for "0 ops map"), a batch-flexible model has dynamic shapes; then the op table.
    """
    info = model if isinstance(model, ModelInfo) else read_model_info(model)
    name = "<bytes>" if isinstance(model, (bytes, bytearray, ModelInfo)) else str(model)
    verdicts = [_verdict(info, op) for op in info.ops]
    errors = []
    quantized = any(t.dtype in ("int8", "uint8") and t.quantized for t in info.tensors)
    if not quantized:
        errors.append(
            "the model is not quantized (float); the Edge TPU runs only full-integer models: convert "
            "with 'shoplens convert MODEL --recipe int8 --target edgetpu'"
        )
    elif any(t.dynamic for t in (*info.inputs, *info.outputs)):
        errors.append(
            "the model has a dynamic batch size; the Edge TPU needs static shapes: convert with "
            "'shoplens convert MODEL --recipe int8 --target edgetpu' (static batch 1)"
        )
    if info.subgraphs > 1:
        errors.append(f"{info.subgraphs} subgraphs (the compiler supports one)")
    for v in verdicts:
        if v.category == "op version too new":
            errors.append(f"op {v.index} {v.op} {v.reason} - the compiler fails to parse the model")
            break
    segment_end = next((v.index for v in verdicts if not v.maps), None)
    if segment_end is not None:
        blocker = verdicts[segment_end]
        for v in verdicts[segment_end + 1 :]:
            if v.maps:
                v.category = "after the TPU segment"
                v.reason = (
                    f"the compiler partitions once; the segment ended at op {segment_end} ({blocker.op})"
                )
    return Preflight(name, verdicts, segment_end, errors)
