"""The conversion report: the one dict every stage's block goes into, its size and latency
measurements, and its Markdown rendering."""

from __future__ import annotations

import platform
import time
from typing import Any

import numpy as np

from shoplens._version import __version__
from shoplens.classifier import Classifier
from shoplens.contract import PreprocessContract
from shoplens.data.datasets import Dataset
from shoplens.options import BaseOptions, ImageClassifierOptions
from shoplens_convert.tflite_stats import gzip_size, io_summary, weight_sparsity

__all__ = ["conversion_report", "latency_ms", "render_markdown", "size_block", "tool_versions"]


def tool_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"shoplens": __version__, "python": platform.python_version()}
    for dist in ("tensorflow", "tf-keras", "keras", "tensorflow-model-optimization", "ai-edge-litert"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _status(chosen: str, comparison: Any) -> dict[str, Any]:
    if comparison is None:
        msg = f"converted with recipe {chosen}; accuracy not checked (no --eval-data)"
        return {"accepted": True, "checked": False, "message": msg}
    lo, hi = comparison.ci95
    if comparison.passed:
        msg = (
            f"converted with recipe {chosen}: top-1 drop {comparison.drop:+.2f} pt "
            f"(95 % CI {lo:+.2f}..{hi:+.2f})"
        )
        if comparison.max_drop is not None:
            msg += f" within the {comparison.max_drop:g} pt budget"
        if comparison.min_agreement is not None:
            msg += f", agreement {comparison.agreement_pct:.2f} % >= {comparison.min_agreement:g} %"
        return {"accepted": True, "checked": True, "message": msg}
    msg = f"{'; '.join(comparison.failures)} with recipe {chosen}; no model written (see report.md)"
    return {"accepted": False, "checked": True, "message": msg}


def conversion_report(
    loaded: Any,
    recipe: Any,
    options: Any,
    chosen: str,
    model: bytes,
    float_ref: bytes,
    comparison: Any,
    output_kind: str,
    output_why: str,
    labels: tuple[str, ...],
    source_contract: PreprocessContract,
    model_contract: PreprocessContract,
    parts: dict[str, Any],
    warnings: list[str],
    *,
    latency_data: Dataset | None = None,
) -> dict[str, Any]:
    """The report of one conversion: the stages' blocks plus what is measured on the result."""
    from shoplens_convert.edgetpu_target import preflight_block

    o = options
    status = _status(chosen, comparison)
    if not status["checked"]:
        warnings = [*warnings, "no --eval-data: the converted model's accuracy was not checked"]
    report: dict[str, Any] = {
        "status": status,
        "warnings": list(warnings),
        "source": {
            "path": str(loaded.path),
            "format": loaded.format,
            "sha256": loaded.sha256,
            "input_shape": list(loaded.input_shape),
            "classes": loaded.num_classes,
            "output": output_kind,
            "output_detected_by": output_why,
        },
        "recipe": {
            **recipe.to_dict(), "chosen": chosen, "io_type": o.io_type, "per_channel": not o.per_tensor,
            "ranges": o.activation_ranges(recipe),
            "target": o.target,
        },
        "labels": {
            "source": str(o.labels) if o.labels else "beside the model or the model's classes",
            "names": list(labels),
        },
        "contract": {"source": source_contract.to_dict(), "model": model_contract.to_dict()},
        **parts,
        "sizes": size_block(float_ref, model),
        "tflite": {**io_summary(model), "weight_sparsity": weight_sparsity(model)},
        "accuracy": comparison.to_dict() if comparison else None,
        "latency": latency_ms(model, o.latency_runs, latency_data) if o.latency_runs else None,
        "tools": tool_versions(),
    }
    if o.target == "edgetpu":
        report["edgetpu"] = {"preflight": preflight_block(model)}
    if o.prune is not None and report.get("prune") is not None:
        ws = report["tflite"]["weight_sparsity"]
        pruned = [v for v in ws.values() if v["op"] != "DEPTHWISE_CONV_2D"]
        total = sum(v["weights"] for v in pruned)
        report["prune"]["sparsity_after_conversion"] = (
            round(sum(v["sparsity"] * v["weights"] for v in pruned) / total, 4) if total else 0.0
        )
    return report


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
    verdict = "ACCEPTED" if st.get("checked", True) else "NOT CHECKED"
    verdict = verdict if st.get("accepted") else "REJECTED"
    lines = [
        f"# Conversion report: {r['source']['path']}",
        "",
        f"**{verdict}**: {st.get('message', '')}",
        "",
        *[f"- warning: {w}" for w in r.get("warnings", [])],
        *([""] if r.get("warnings") else []),
        "## Source",
        f"- format {r['source']['format']}, input {r['source']['input_shape']}, "
        f"{r['source']['classes']} classes",
        f"- output: {r['source']['output']} ({r['source']['output_detected_by']})",
        f"- sha256 `{r['source']['sha256']}`",
        "",
        "## Recipe",
        f"- {r['recipe']['name']}: {r['recipe']['description']}",
        f"- chosen: **{r['recipe']['chosen']}**, I/O {r['recipe']['io_type']}, "
        f"{'per-channel' if r['recipe']['per_channel'] else 'per-tensor'}, target {r['recipe']['target']}"
        + (f", activation ranges {r['recipe']['ranges']}" if r["recipe"].get("ranges") else ""),
    ]
    if r.get("fold"):
        lines.append(
            f"- {r['fold']['reason']} (max output difference {r['fold']['max_output_difference']:.2g})"
        )
    lines += _model_edits_markdown(r)
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
        at_least = acc.get("min_agreement_pct")
        lines += [
            "",
            f"## Accuracy on {acc['data']} ({acc['n']} images)",
            f"- source top-1 {acc['source_top1'] * 100:.2f} %, converted {acc['converted_top1'] * 100:.2f} %",
            f"- drop {acc['drop_pts']:+.2f} pt, "
            f"95 % CI [{acc['drop_ci95_pts'][0]:+.2f}, {acc['drop_ci95_pts'][1]:+.2f}]"
            + (f", budget {acc['max_drop_pts']:g} pt" if acc["max_drop_pts"] is not None else ""),
            f"- prediction agreement {acc['agreement'] * 100:.2f} %"
            + (f", at least {at_least:g} %" if at_least is not None else ""),
        ]
    if r.get("auto_trials"):
        lines += [
            "",
            "## Candidates tried (auto)",
            "| candidate | KiB | drop pt | agreement | passed |",
            "|---|---:|---:|---:|---|",
        ]
        for t in r["auto_trials"]:
            lines.append(
                f"| {t['candidate']} | {t['bytes'] / 1024:.1f} | {t['drop_pts']:+.2f} "
                f"| {t['agreement'] * 100:.1f} % | {t['passed']} |"
            )
    if r.get("fallback", {}).get("float_layers"):
        lines.append(f"- float fallback layers: {', '.join(r['fallback']['float_layers'])}")
    if r.get("prune"):
        p = r["prune"]
        lines += [
            "",
            f"## Pruning (target {p['target_sparsity']:.0%})",
            f"- sparsity after conversion (pruned ops): {p.get('sparsity_after_conversion', 0):.1%}",
            f"- prunable share of the weights: {p.get('prunable_weight_share', 0):.1%}",
            f"- fine-tune: {p['fine_tune']['epochs']} epochs on {p['fine_tune']['images']} images, "
            f"{p['fine_tune']['seconds']} s, learning "
            + ("the dense model's scores (distillation)" if p.get("targets") == "source" else "the labels"),
        ]
        if p["left_dense"]:
            lines.append(
                f"- left dense: {len(p['left_dense'])} layers ("
                + "; ".join(sorted(set(p["left_dense"].values())))
                + ")"
            )
    if r.get("prune_channels"):
        c = r["prune_channels"]
        lines += [
            "",
            f"## Channel pruning ({c['ratio']:.0%} of the channels of each prunable group)"
            if c.get("ratio") is not None
            else f"## Channel pruning (per-group ratios, to {c['budget']['budget_macs_share']:g} x the MACs)",
            f"- criterion: {c['criterion']}",
            f"- parameters: {c['params_before']:,} -> {c['params_after']:,}; "
            f"MACs: {c['macs_before']:,} -> {c['macs_after']:,}",
        ]
        if "int8_bytes_before" in c:
            lines.append(f"- int8 model: {_kb(c['int8_bytes_before'])} -> {_kb(c['int8_bytes_after'])}")
        if c.get("invoke_ms_before") is not None:
            lines.append(
                f"- invoke p50 (1 thread): {c['invoke_ms_before']} -> {c['invoke_ms_after']} ms; whole frame "
                f"{c['frame_ms_before']} -> {c['frame_ms_after']} ms"
            )
        ft = c["fine_tune"]
        lines += [
            f"- fine-tune: {ft['epochs']} epochs on {ft['images']} images, {ft['seconds']} s",
            "",
            "| layers | channels | why |",
            "|---|---:|---|",
        ]
        for g in c["groups"]:
            width = f"{g['channels_before']} -> {g['channels_after']}"
            lines.append(f"| {', '.join(g['layers'])} | {width} | {g['why']} |")
    if r.get("qat"):
        q = r["qat"]["fine_tune"]
        learnt = {"source": "the float model's scores (distillation)",
                  "source before pruning": "the float model's scores from before pruning (distillation)"}
        what = learnt.get(r["qat"].get("teacher") or "", "the labels")  # no teacher: the labels
        lines.append(f"\n## QAT\n- {q['epochs']} epochs on {q['images']} images, {q['seconds']} s, "
                     f"learning {what}")
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


def _model_edits_markdown(r: dict[str, Any]) -> list[str]:
    """What the converter did to the model before quantizing: input preprocessing, the bridge."""
    lines: list[str] = []
    ip = r.get("input_preprocessing")
    if ip:
        lines += ["", "## Input preprocessing in the model", *[f"- {s}" for s in ip["steps"]],
                  f"- {ip['handling']}"]  # fmt: skip
    b = r.get("bridge") or {}
    if b.get("used"):
        lines += ["", "## Bridge to tf-keras",
                  f"- {b['layers']} layers, max output difference {b['max_output_difference']:.2g} on "
                  f"{b['images']} images"]  # fmt: skip
        if b.get("nested_models_flattened"):
            lines.append(f"- nested models flattened: {', '.join(b['nested_models_flattened'])}")
        kinds = sorted(set(b.get("bridged_as", {}).values()))
        if kinds:
            lines.append(f"- bridged by equivalent layers: {'; '.join(kinds)}")
    q = r.get("qat") or {}
    fb = q.get("fallback_configs") or {}
    if fb:
        lines += ["", f"## QAT configs outside TFMOT's scheme ({len(fb)} layers)"]
        lines += [f"- {reason}: {n} layers" for reason, n in _count(fb.values()).items()]
    return lines


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


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
