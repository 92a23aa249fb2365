"""Converter targets on the reference model: size ratios and top-1 drops on the full test set.

    .venv/bin/python -m benchmarks.convert_targets            # about 20 minutes on 2 cores
    .venv/bin/python -m benchmarks.convert_targets --quick    # smoke run on small subsets

Each row runs the library pipeline (:func:`shoplens_convert.pipeline.convert`, exactly what
``shoplens convert`` runs) with fine-tuning on ``fashion-mnist:train[:N]`` and the accuracy guard on
``fashion-mnist:test`` (10,000 images), source and converted model through the same SDK
preprocessing. Writes ``benchmarks/results/convert-targets-<date>.json`` and
``docs/converter_targets.md``; the converted models go to ``out/convert_targets/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from shoplens.internal.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "sample_apps" / "reference_model" / "product_cnn.keras"

# (row, recipe, prune, target description)
ROWS: list[tuple[str, str, float | None, str]] = [
    ("float32", "float32", None, "baseline"),
    ("float16", "float16", None, ""),
    ("dynamic", "dynamic", None, ""),
    ("int8", "int8", None, "bytes <= 0.30x float32; drop <= 0.5 pt; convert < 2 min"),
    ("int8 per-tensor", "int8", None, "bytes <= 0.30x float32 (per-tensor)"),
    ("qat-int8", "qat-int8", None, "drop <= 0.3 pt"),
    ("prune 50 % + int8", "int8", 0.5, "drop <= 1.0 pt"),
    ("prune 50 % + pqat-int8", "pqat-int8", 0.5, "drop <= 0.3 pt; sparsity kept"),
    ("prune 75 % + int8", "int8", 0.75, "gzip <= 0.12x float32 gzip"),
    ("prune 75 % + int8 per-tensor", "int8", 0.75, "gzip <= 0.12x float32 gzip (per-tensor)"),
    ("auto --max-drop 0.5", "auto", None, "the smallest candidate within 0.5 pt"),
]


def _predictions(model: bytes, eval_spec: str) -> list[int]:
    from shoplens.data.spec import open_dataset
    from shoplens.metrics import evaluate_tflite

    return evaluate_tflite(model, open_dataset(eval_spec)).predictions.tolist()


def run(quick: bool, train_n: int, epochs: int, only: list[str] | None) -> dict[str, Any]:
    from shoplens_convert.pipeline import ConvertOptions, convert

    eval_spec = "fashion-mnist:test:500" if quick else "fashion-mnist:test"
    train_spec = f"fashion-mnist:train:{200 if quick else train_n}"
    out_root = ROOT / "out" / "convert_targets"
    rows = []
    for label, recipe, prune, target in ROWS:
        if only and label not in only:
            continue
        opts = ConvertOptions(
            recipe=recipe,
            prune=prune,
            train_data=train_spec if (prune or recipe.endswith("qat-int8")) else None,
            prune_epochs=1 if quick else epochs,
            calib_data="fashion-mnist:train:300",
            eval_data=eval_spec,
            per_tensor=label.endswith("per-tensor"),
            max_drop=0.5 if recipe == "auto" else None,
            latency_runs=200,
            show_progress=True,
        )
        t0 = time.perf_counter()
        result = convert(REF, opts)
        seconds = time.perf_counter() - t0
        result.save(
            out_root / label.replace(" ", "_").replace("%", "pct").replace("+", "plus"), overwrite=True
        )
        r = result.report
        acc = r["accuracy"]
        assert result.model is not None, r["status"]
        from benchmarks.where_int8_pays import time_invoke

        preds = _predictions(result.model, eval_spec)
        timing = {f"t{t}": time_invoke(result.model, t, runs=100 if quick else 500) for t in (1, 2)}
        row = {
            "row": label,
            "target": target,
            "bytes": r["sizes"]["model_bytes"],
            "ratio": r["sizes"]["ratio_to_float32"],
            "gzip_ratio": r["sizes"]["gzip_ratio_to_float32_gzip"],
            "gzip_bytes": r["sizes"]["model_gzip_bytes"],
            "source_top1": acc["source_top1"],
            "top1": acc["converted_top1"],
            "drop_pts": acc["drop_pts"],
            "drop_ci95": acc["drop_ci95_pts"],
            "sparsity_after_conversion": (r.get("prune") or {}).get("sparsity_after_conversion"),
            "invoke_p50_ms": r["latency"]["invoke_p50"],
            "invoke": timing,
            "chosen": r["recipe"].get("chosen"),
            "predictions": preds,
            "seconds_total": round(seconds, 1),
            "timings_s": r["timings_s"],
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "predictions"}), flush=True)
    base = next((r for r in rows if r["row"] == "float32"), None)
    if base is not None:  # ratios to the float32 model this tool writes, metadata and all
        for r in rows:
            r["ratio"] = round(r["bytes"] / base["bytes"], 4)
            r["gzip_ratio"] = round(r["gzip_bytes"] / base["gzip_bytes"], 4)
            a, b = r["predictions"], base["predictions"]
            r["agreement_with_float32"] = round(sum(x == y for x, y in zip(a, b, strict=True)) / len(a), 6)
    for r in rows:
        r.pop("predictions", None)
    return {"date": dt.date.today().isoformat(), "train": train_spec, "eval": eval_spec,
            "epochs": epochs, "rows": rows}  # fmt: skip


def quantization_overhead(model_path: Path) -> dict[str, int]:
    """Bytes of weight buffers, per-channel scales and (stored-once) zero-point vectors."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(model_path.read_bytes()), 0)
    quant = [t.quantization for t in m.subgraphs[0].tensors if t.quantization is not None]
    channels = sum(len(q.scale) for q in quant if q.scale is not None)
    zero_vectors = {q.zeroPoint.tobytes() for q in quant if q.zeroPoint is not None}
    return {
        "quantized_channels": int(channels),
        "scale_bytes": int(channels * 4),
        "zero_point_bytes_undeduplicated": int(channels * 8),
        "zero_point_bytes": int(sum(len(z) for z in zero_vectors)),
        "buffer_bytes": int(sum(len(b.data) for b in m.buffers if b.data is not None)),
        "file_bytes": int(model_path.stat().st_size),
    }


def gzip_breakdown(model_path: Path) -> dict[str, int]:
    """gzip -9 bytes of each kind of weight buffer, compressed separately, and of everything else."""
    import gzip

    from ai_edge_litert import schema_py_generated as schema

    data = model_path.read_bytes()
    m = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    sg = m.subgraphs[0]
    code_name = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    keys = ("conv/fc weights (pruned)", "depthwise weights (dense)", "biases")
    groups: dict[str, bytearray] = {k: bytearray() for k in keys}
    seen: set[int] = set()
    for op in sg.operators:
        oc = m.operatorCodes[op.opcodeIndex]
        name = code_name.get(max(oc.builtinCode, oc.deprecatedBuiltinCode), "")
        if name not in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"):
            continue
        for k, t_idx in enumerate(op.inputs[1:3], start=1):
            b = sg.tensors[t_idx].buffer
            if b in seen or m.buffers[b].data is None:
                continue
            seen.add(b)
            key = "biases" if k == 2 else ("depthwise weights (dense)" if name == "DEPTHWISE_CONV_2D"
                                           else "conv/fc weights (pruned)")  # fmt: skip
            groups[key] += bytes(m.buffers[b].data)
    out = {k: len(gzip.compress(bytes(v), 9)) for k, v in groups.items()}
    total = len(gzip.compress(data, 9))
    out["everything else (scales, zero points, graph, metadata)"] = max(0, total - sum(out.values()))
    out["total"] = total
    return out


def time_plain_int8() -> float:
    """Wall time of the int8 conversion alone (no guard, no latency), as a user runs it."""
    from shoplens_convert.pipeline import ConvertOptions, convert

    t0 = time.perf_counter()
    convert(REF, ConvertOptions(recipe="int8", calib_data="fashion-mnist:train:300", latency_runs=0))
    return round(time.perf_counter() - t0, 1)


def recipe_table(rows: list[dict[str, Any]]) -> list[str]:
    """Table 1: one row per recipe (markdown lines), shared by this page and docs/benchmarks.md."""
    lines = [
        "| row | KiB | x float32 | gzip KiB | gzip x float32 | top-1 % | drop pt (95 % CI) "
        "| agreement with float32 | sparsity | invoke p50/p95 ms, 1 thread | 2 threads | convert s "
        "| target |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|---:|---|",
    ]
    for r in rows:
        sparsity = r.get("sparsity_after_conversion")
        sp = f"{sparsity:.1%}" if sparsity is not None else ""
        t1, t2 = r.get("invoke", {}).get("t1", {}), r.get("invoke", {}).get("t2", {})
        chose = f" (chose {r['chosen']})" if r["row"].startswith("auto") and r.get("chosen") else ""
        label = r["row"] + chose
        lines.append(
            f"| {label} | {r['bytes'] / 1024:.1f} | {r['ratio']:.3f} | {r['gzip_bytes'] / 1024:.1f} | "
            f"{r['gzip_ratio']:.3f} | {r['top1'] * 100:.2f} | {r['drop_pts']:+.2f} "
            f"({r['drop_ci95'][0]:+.2f}..{r['drop_ci95'][1]:+.2f}) | "
            f"{100 * r.get('agreement_with_float32', float('nan')):.2f} % | {sp} | "
            f"{t1.get('p50_ms', '')} / {t1.get('p95_ms', '')} | "
            f"{t2.get('p50_ms', '')} / {t2.get('p95_ms', '')} | "
            f"{r['seconds_total']:.0f} | {r['target']} |"
        )
    return lines


def finish(res: dict[str, Any]) -> dict[str, Any]:
    """Add what the page explains beside the table: the time of a plain int8 conversion, where the
    int8 bytes go, and where the pruned 75 % model's gzip bytes go (from the models ``run`` saved)."""
    res["int8_convert_seconds"] = time_plain_int8()
    int8_model = ROOT / "out" / "convert_targets" / "int8" / "model.tflite"
    if int8_model.is_file():
        res["int8_overhead"] = quantization_overhead(int8_model)
    p75 = ROOT / "out" / "convert_targets" / "prune_75_pct_plus_int8" / "model.tflite"
    if p75.is_file():
        res["prune75_gzip"] = gzip_breakdown(p75)
    return res


def write_markdown(res: dict[str, Any], path: Path) -> None:
    lines = [
        "# Converter targets on the reference model",
        "",
        f"Measured {res['date']} with `python -m benchmarks.convert_targets`: fine-tuning on "
        f"`{res['train']}` ({res['epochs']} pruning epochs), accuracy on `{res['eval']}`, source and "
        "converted model through the same SDK preprocessing. Drops are top-1 points with a paired 95 % CI.",
        "",
        *recipe_table(res["rows"]),
    ]
    lines += [
        "",
        f"Converting the reference model to int8 alone (300 calibration images, no guard): "
        f"{res['int8_convert_seconds']:.0f} s, in-process (add about 5 s for the TensorFlow import).",
    ]
    ov = res.get("int8_overhead")
    if ov:
        f32 = next(r["bytes"] for r in res["rows"] if r["row"] == "float32")
        lines += [
            "",
            f"Why per-channel int8 is {ov['file_bytes'] / f32:.3f}x and not 0.25x: the weights and int32 "
            f"biases take {ov['buffer_bytes'] / 1024:.0f} KiB; the {ov['quantized_channels']:,} per-channel "
            f"scales take {ov['scale_bytes'] / 1024:.0f} KiB and their zero points "
            f"{ov['zero_point_bytes'] / 1024:.0f} KiB (the converter alone would write "
            f"{ov['zero_point_bytes_undeduplicated'] / 1024:.0f} KiB of them; ShopLens stores identical "
            "vectors once). The reference model is small (293k parameters, one scale for every ~35 of "
            "them), so this fixed cost weighs heavily; per-tensor quantization drops it, with the same "
            "top-1 here.",
        ]
    gb = res.get("prune75_gzip")
    if gb:
        f32_gzip = next(r["gzip_bytes"] for r in res["rows"] if r["row"] == "float32")
        pt_rows = [r for r in res["rows"] if r["row"] == "prune 75 % + int8 per-tensor"]
        pt = f"{pt_rows[0]['gzip_ratio']:.3f}x" if pt_rows else "its row"
        parts = "; ".join(f"{k} {v / 1024:.1f} KiB" for k, v in gb.items() if k != "total")
        lines += [
            "",
            f"Where the gzip bytes of the pruned 75 % + int8 model go ({gb['total'] / 1024:.1f} KiB, "
            f"{gb['total'] / f32_gzip:.3f}x the float32 gzip; parts compressed separately): {parts}. "
            "Most of it is the pruned weights themselves: with unstructured sparsity, gzip must encode "
            "where the 25 % of kept weights are (about H(0.25) = 0.81 bit per weight) and their int8 "
            "values (up to 8 bits each), so 75 % zeros shrink int8 weights to roughly 0.35x, not 0.25x. "
            "The dense depthwise kernels (TFMOT does not prune them), biases, per-channel scales and "
            "graph add a fixed cost that a model this small (293k parameters) cannot amortise; "
            f"per-tensor quantization removes most scales ({pt} in the table). Reaching 0.12x needs "
            "higher sparsity, structured (channel) pruning, or a larger model; not done here.",
        ]
    atomic_write_text(path, "\n".join(lines) + "\n", overwrite=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--train", type=int, default=58000, help="fine-tuning images (the training split less validation)"
    )
    ap.add_argument("--epochs", type=int, default=2, help="pruning fine-tune epochs")
    ap.add_argument("--only", nargs="*", help="row labels to run")
    a = ap.parse_args()
    res = finish(run(a.quick, a.train, a.epochs, a.only))
    print("int8 conversion alone:", res["int8_convert_seconds"], "s", flush=True)
    if a.quick or a.only:
        return
    out = ROOT / "benchmarks" / "results" / f"convert-targets-{res['date']}.json"
    atomic_write_text(out, json.dumps(res, indent=2) + "\n", overwrite=True)
    write_markdown(res, ROOT / "docs" / "converter_targets.md")


if __name__ == "__main__":
    main()
