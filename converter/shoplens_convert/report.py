"""The conversion report: size and latency measurements, and its Markdown rendering."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from shoplens.classifier import Classifier
from shoplens.data.datasets import Dataset
from shoplens.options import BaseOptions, ImageClassifierOptions
from shoplens_convert.tflite_stats import gzip_size

__all__ = ["latency_ms", "render_markdown", "size_block"]


def size_block(float32: bytes, model: bytes) -> dict[str, Any]:
    """Raw and gzip sizes and their ratios to the float32 conversion of the same graph."""
    f_raw, f_gz = len(float32), gzip_size(float32)
    m_raw, m_gz = len(model), gzip_size(model)
    return {
        "float32_bytes": f_raw,
        "float32_gzip_bytes": f_gz,
        "model_bytes": m_raw,
        "model_gzip_bytes": m_gz,
        "ratio_to_float32": round(m_raw / f_raw, 4),
        "gzip_ratio_to_float32_gzip": round(m_gz / f_gz, 4),
    }


def latency_ms(model: bytes, runs: int, dataset: Dataset | None = None) -> dict[str, Any]:
    """p50/p95 host latency through the SDK Classifier on 1 thread (frame in, top-k out)."""
    frames: list[np.ndarray] = []
    if dataset is not None:
        for batch in dataset.batches(64):
            frames.extend(batch.images)
            if len(frames) >= 64:
                break
    if not frames:
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (480, 640, 3), np.uint8) for _ in range(8)]
    opts = ImageClassifierOptions(base_options=BaseOptions(model_asset_buffer=model, num_threads=1))
    total, invoke = [], []
    with Classifier(opts) as clf:
        for i in range(min(20, runs)):  # warm-up
            clf.classify(frames[i % len(frames)])
        for i in range(runs):
            t0 = time.perf_counter()
            r = clf.classify(frames[i % len(frames)])
            total.append((time.perf_counter() - t0) * 1e3)
            invoke.append(r.timing.invoke_ms)
        backend = clf.backend
    t, v = np.asarray(total), np.asarray(invoke)
    return {
        "runs": runs,
        "threads": 1,
        "backend": backend,
        "frames": "eval images" if dataset is not None else "random 640x480 frames",
        "end_to_end_p50": round(float(np.percentile(t, 50)), 4),
        "end_to_end_p95": round(float(np.percentile(t, 95)), 4),
        "invoke_p50": round(float(np.percentile(v, 50)), 4),
        "invoke_p95": round(float(np.percentile(v, 95)), 4),
    }


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def render_markdown(r: dict[str, Any]) -> str:
    """A human-readable report.md from the report dict."""
    st = r["status"]
    lines = [
        f"# Conversion report: {r['source']['path']}",
        "",
        f"**{'ACCEPTED' if st.get('accepted') else 'REJECTED'}**: {st.get('message', '')}",
        "",
        "## Source",
        f"- format {r['source']['format']}, input {r['source']['input_shape']}, "
        f"{r['source']['classes']} classes",
        f"- output: {r['source']['output']} ({r['source']['output_detected_by']})",
        f"- sha256 `{r['source']['sha256']}`",
        "",
        "## Recipe",
        f"- {r['recipe']['name']}: {r['recipe']['description']}",
        f"- chosen: **{r['recipe']['chosen']}**, I/O {r['recipe']['io_type']}, "
        f"{'per-channel' if r['recipe']['per_channel'] else 'per-tensor'}, target {r['recipe']['target']}",
    ]
    if r.get("fold"):
        lines.append(
            f"- {r['fold']['reason']} (max output difference {r['fold']['max_output_difference']:.2g})"
        )
    s = r["sizes"]
    lines += [
        "",
        "## Size",
        "| | bytes | gzip |",
        "|---|---:|---:|",
        f"| float32 | {_kb(s['float32_bytes'])} | {_kb(s['float32_gzip_bytes'])} |",
        f"| this model | {_kb(s['model_bytes'])} | {_kb(s['model_gzip_bytes'])} |",
        f"| ratio | {s['ratio_to_float32']:.3f}x | {s['gzip_ratio_to_float32_gzip']:.3f}x |",
    ]
    acc = r.get("accuracy")
    if acc:
        lines += [
            "",
            f"## Accuracy on {acc['data']} ({acc['n']} images)",
            f"- source top-1 {acc['source_top1'] * 100:.2f} %, converted {acc['converted_top1'] * 100:.2f} %",
            f"- drop {acc['drop_pts']:+.2f} pt, "
            f"95 % CI [{acc['drop_ci95_pts'][0]:+.2f}, {acc['drop_ci95_pts'][1]:+.2f}]"
            + (f", budget {acc['max_drop_pts']:g} pt" if acc["max_drop_pts"] is not None else ""),
            f"- prediction agreement {acc['agreement'] * 100:.2f} %",
        ]
    if r.get("auto_trials"):
        lines += [
            "",
            "## Candidates tried (auto)",
            "| candidate | KiB | drop pt | passed |",
            "|---|---:|---:|---|",
        ]
        for t in r["auto_trials"]:
            lines.append(
                f"| {t['candidate']} | {t['bytes'] / 1024:.1f} | {t['drop_pts']:+.2f} | {t['passed']} |"
            )
    if r.get("fallback", {}).get("float_layers"):
        lines.append(f"- float fallback layers: {', '.join(r['fallback']['float_layers'])}")
    if r.get("prune"):
        p = r["prune"]
        lines += [
            "",
            f"## Pruning (target {p['target_sparsity']:.0%})",
            f"- sparsity after conversion (pruned ops): {p.get('sparsity_after_conversion', 0):.1%}",
            f"- fine-tune: {p['fine_tune']['epochs']} epochs on {p['fine_tune']['images']} images, "
            f"{p['fine_tune']['seconds']} s",
        ]
        if p["left_dense"]:
            lines.append(
                f"- left dense: {len(p['left_dense'])} layers ("
                + "; ".join(sorted(set(p["left_dense"].values())))
                + ")"
            )
    if r.get("qat"):
        q = r["qat"]["fine_tune"]
        lines.append(f"\n## QAT\n- {q['epochs']} epochs on {q['images']} images, {q['seconds']} s")
    io_ = r["tflite"]
    lines += ["", "## Tensors"]
    for kind in ("inputs", "outputs"):
        for t in io_[kind]:
            q = f", scale {t['scale'][0]:.6g}, zero point {t['zero_point'][0]}" if t.get("scale") else ""
            lines.append(f"- {kind[:-1]} `{t['name']}` {t['shape']} {t['dtype']}{q}")
    lines += ["", "## Ops", ", ".join(f"{k} x{v}" for k, v in io_["op_histogram"].items())]
    lat = r.get("latency")
    if lat:
        lines += [
            "",
            f"## Host latency ({lat['threads']} thread, {lat['backend']}, {lat['runs']} runs, "
            f"{lat['frames']})",
            f"- end to end p50 {lat['end_to_end_p50']:.3f} ms, p95 {lat['end_to_end_p95']:.3f} ms",
            f"- invoke p50 {lat['invoke_p50']:.3f} ms, p95 {lat['invoke_p95']:.3f} ms",
        ]
    if r.get("edgetpu"):
        lines += edgetpu_markdown(r["edgetpu"])
    if r.get("embedding"):
        e = r["embedding"]
        lines += ["", "## Embedding model", f"- `{e['file']}`: layer `{e['layer']}`, {e['quantization']}, "
                  f"{_kb(e['bytes'])}"]  # fmt: skip
        d = e.get("drift")
        if d:
            ov = next((v for k, v in d.items() if k.startswith("neighbour_overlap")), None)
            lines.append(
                f"- float vs quantized on {d['images']} images of {d['data']}: "
                f"cosine mean {d['cosine_mean']:.4f} "
                f"(target >= 0.98), 5th percentile {d['cosine_p5']:.4f}; neighbour overlap@10 {ov:.3f}"
            )
    lines += ["", "## Tools", ", ".join(f"{k} {v}" for k, v in r["tools"].items()), ""]
    return "\n".join(lines)


def edgetpu_markdown(e: dict[str, Any]) -> list[str]:
    """The Edge TPU section: pre-flight summary, the ops that do not map, and the compiler's result."""
    pf = e["preflight"]
    lines = ["", "## Edge TPU", f"- pre-flight: {pf['summary']}"]
    off = [o for o in pf["ops"] if not o["maps"]]
    if off:
        lines += ["", "| op | name | version | verdict | reason |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {o['index']} | {o['op']} | {o['version']} | {o['category']} | {o.get('reason', '')} |"
                  for o in off[:40]]  # fmt: skip
    c = e.get("compiler")
    if c:
        if c["status"] == "compiled":
            lines.append(
                f"- compiler {c['compiler_version']}: {c['ops_on_tpu']} ops on the Edge TPU, "
                f"{c['ops_on_cpu']} on "
                f"the CPU; on-chip memory {c['on_chip_memory_used']}, off-chip {c['off_chip_memory_used']}; "
                f"output {c['output']}"
            )
        else:
            lines.append(f"- compiler: {c['status']}: {c['message']}")
    return lines
