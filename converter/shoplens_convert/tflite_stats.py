"""Facts about a converted .tflite read from its flatbuffer: weight sparsity, sizes, I/O."""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from shoplens.errors import ModelError
from shoplens.tflite_model import read_model_info

__all__ = ["gzip_size", "io_summary", "weight_sparsity"]

_WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"}
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 9: np.int8, 7: np.int16}


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def _opcode_names() -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def weight_sparsity(tflite: bytes) -> dict[str, dict[str, Any]]:
    """Per weighted op: fraction of exact zeros in its (dequantized-source) weight tensor.

    Quantized weights are symmetric (zero point 0), so an int8 zero is a real zero; float16
    weights behind a DEQUANTIZE op are followed back to their buffer.
    """
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    except Exception as exc:
        raise ModelError(f"cannot parse the TFLite flatbuffer: {exc}") from None
    names = _opcode_names()
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    out: dict[str, dict[str, Any]] = {}
    for sg in model.subgraphs:
        producer = {o: op for op in sg.operators for o in (op.outputs if op.outputs is not None else [])}
        for op in sg.operators:
            kind = names.get(codes[op.opcodeIndex], "?")
            if kind not in _WEIGHTED_OPS or op.inputs is None or len(op.inputs) < 2:
                continue
            t_index = int(op.inputs[1])
            tensor = sg.tensors[t_index]
            buf = model.buffers[tensor.buffer].data if tensor.buffer else None
            if (buf is None or len(buf) == 0) and t_index in producer:
                src = producer[t_index]
                tensor = sg.tensors[int(src.inputs[0])]
                buf = model.buffers[tensor.buffer].data if tensor.buffer else None
            if buf is None or len(buf) == 0 or tensor.type not in _DTYPES:
                continue
            w = np.frombuffer(np.asarray(buf, np.uint8).tobytes(), _DTYPES[tensor.type])
            name = (
                (tensor.name or b"").decode(errors="replace")
                if isinstance(tensor.name, bytes)
                else str(tensor.name)
            )
            out[f"{kind}:{name.split(';')[0]}"] = {
                "op": kind,
                "weights": int(w.size),
                "dtype": np.dtype(_DTYPES[tensor.type]).name,
                "sparsity": round(float(np.mean(w == 0)), 4),
            }
    return out


def io_summary(tflite: bytes) -> dict[str, Any]:
    info = read_model_info(tflite)

    def one(t: Any) -> dict[str, Any]:
        d: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
        if t.scales:
            d["scale"] = [float(s) for s in t.scales]
            d["zero_point"] = [int(z) for z in t.zero_points]
        return d

    return {
        "inputs": [one(t) for t in info.inputs],
        "outputs": [one(t) for t in info.outputs],
        "op_histogram": info.op_histogram,
    }
