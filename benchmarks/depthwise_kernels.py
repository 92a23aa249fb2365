"""Depthwise convolutions under XNNPACK against LiteRT's own kernels, by kernel size, side by side.

    .venv/bin/python -m benchmarks.depthwise_kernels [--channels 64] [--sizes 8 16 32]

Each model is one ``DepthwiseConv2D(k, padding="same")`` between two 1x1 convolutions, converted by
TFLite to float32 and to full int8 (per-channel weights, int8 I/O, 20 calibration arrays). Each is
timed at 1 thread with the default delegate (XNNPACK, as the SDK runs it) and without it
(``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``), alternating runs, p50 of 200 invokes each.
Found on the model zoo's NASNetMobile (7x7 separable convolutions), whose int8 model was slower
than its float32 one. Each model is then loaded as the SDK loads it with ``cpu_kernels="auto"``
(a brief timing of both at load): the row says what it chose, and whether that is the choice the
long side-by-side timing makes by the same rule (``shoplens.runtime.pick_cpu_kernels``).
Writes ``benchmarks/results/depthwise-kernels-DATE.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from benchmarks import ROOT
from shoplens.internal.atomic import atomic_write_text
from shoplens.runtime import make_interpreter, pick_cpu_kernels, time_alternating
from shoplens.tflite_model import read_model_info

KERNELS = (3, 5, 7, 9)


def build(kernel: int, size: int, channels: int, int8: bool) -> bytes:
    import tensorflow as tf

    layers = tf.keras.layers
    x_in = tf.keras.Input((size, size, channels))
    x = layers.Conv2D(channels, 1)(x_in)
    x = layers.DepthwiseConv2D(kernel, padding="same")(x)
    model = tf.keras.Model(x_in, layers.Conv2D(channels, 1)(x))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: (
            [rng.random((1, size, size, channels), dtype=np.float32)] for _ in range(20)
        )
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def invoke_ms(model: bytes, runs: int = 200) -> dict[str, float]:
    """p50 invoke ms with XNNPACK and without it, the two interpreters taking turns (the SDK's timing,
    run long)."""
    info = read_model_info(model)
    kernels = ("xnnpack", "builtin")
    interpreters = {k: make_interpreter(model, info, cpu_kernels=k).interpreter for k in kernels}
    ms = time_alternating(interpreters, min_runs=runs, max_runs=runs, budget_s=0.0)
    return {k: round(v, 4) for k, v in ms.items()}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.depthwise_kernels", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    print("| kernel | size | type | XNNPACK ms | LiteRT kernels ms | ratio | auto chose |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | --- |")
    for kernel in KERNELS:
        for size in args.sizes:
            for int8 in (False, True):
                model = build(kernel, size, args.channels, int8)
                ms = invoke_ms(model)
                chose = make_interpreter(model, read_model_info(model), cpu_kernels="auto").cpu_kernels.value
                right = pick_cpu_kernels(ms["xnnpack"], ms["builtin"]).value
                row = {"kernel": kernel, "size": size, "channels": args.channels,
                       "type": "int8" if int8 else "float32", **ms,
                       "xnnpack_over_builtin": round(ms["xnnpack"] / ms["builtin"], 3),
                       "auto_chose": chose, "auto_agrees": chose == right}  # fmt: skip
                rows.append(row)
                print(f"| {kernel}x{kernel} | {size}x{size} | {row['type']} | {ms['xnnpack']:.3f} | "
                      f"{ms['builtin']:.3f} | {row['xnnpack_over_builtin']:.2f}x | {chose}"
                      f"{'' if chose == right else f' (side by side: {right})'} |")  # fmt: skip
    date = time.strftime("%Y-%m-%d")
    out = ROOT / "benchmarks" / "results" / f"depthwise-kernels-{date}.json"
    agree = sum(r["auto_agrees"] for r in rows)
    print(f"auto chose as the side-by-side timing does on {agree} of {len(rows)} models")
    results = {"date": date, "machine": f"{os.cpu_count()} cores", "rows": rows,
               "auto_agrees": f"{agree} of {len(rows)}"}  # fmt: skip
    atomic_write_text(out, json.dumps(results, indent=1) + "\n", overwrite=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
