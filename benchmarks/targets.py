"""The benchmarks' targets, each a (figure, met) pair computed from the sections a results dict holds."""

from __future__ import annotations

import numpy as np


def size_targets(r: dict) -> dict:
    """The converter's size targets, from Table 1."""
    rows = {x["row"]: x for x in r.get("recipes", {}).get("rows", [])}
    out = {}
    if "int8" in rows:
        v = rows["int8"]["ratio"]
        pt = rows.get("int8 per-tensor", {}).get("ratio", float("nan"))
        out["int8 <= 0.30x float32 bytes"] = (f"{v:.3f}x (per-tensor {pt:.3f}x)", v <= 0.30)
    if "prune 75 % + int8" in rows:
        v = rows["prune 75 % + int8"]["gzip_ratio"]
        pt = rows.get("prune 75 % + int8 per-tensor", {}).get("gzip_ratio", float("nan"))
        name = "pruned 75 % + int8 <= 0.12x float32 gzip bytes"
        out[name] = (f"{v:.3f}x (per-tensor {pt:.3f}x)", v <= 0.12)
    return out


def paired_ratio(a: dict, b: dict, key: str) -> float:
    """``a[key] / b[key]`` for two peers; with interleaved rounds, the median of the ratios taken
    within each round (side by side), not the ratio of two medians from different rounds."""
    ra, rb = a.get(f"rounds_{key}"), b.get(f"rounds_{key}")
    if ra and rb and len(ra) == len(rb) and None not in ra + rb:
        return float(np.median(np.array(ra) / np.array(rb)))
    return float(a[key] / b[key])


def peer_targets(p: dict) -> dict:
    if not all("fps" in p.get(k, {}) for k in ("shoplens", "invoke", "mediapipe", "shoplens-gate")):
        return {}
    e2e = paired_ratio(p["shoplens"], p["invoke"], "p50_ms")
    fr = paired_ratio(p["shoplens"], p["mediapipe"], "fps")
    agree = float(np.mean(np.array(p["shoplens"]["top1"]) == np.array(p["mediapipe"]["top1"])))
    gate = paired_ratio(p["shoplens-gate"], p["shoplens"], "p50_ms") - 1
    return {
        "end-to-end <= 1.5x invoke (p50)": (f"{e2e:.2f}x", e2e <= 1.5),
        "frames/s >= 1.5x MediaPipe": (f"{fr:.2f}x", fr >= 1.5),
        "top-1 agreement with MediaPipe >= 99 %": (f"{agree * 100:.1f} %", agree >= 0.99),
        "quality gate costs <= 10 %": (f"{gate * 100:+.1f} %", gate <= 0.10),
    }


def all_targets(r: dict) -> dict:
    """Every target, from the sections ``r`` holds (a resumed run's too)."""
    from benchmarks import channels, colour, open_set, search_scale

    t = peer_targets(r.get("peers", {}))
    if "colour" in r:
        t.update(colour.targets(r["colour"]))
    if "open_set" in r:
        t.update(open_set.targets(r["open_set"]))
    k = r.get("kiosk_accuracy", {})
    if k.get("float_kiosk_top1"):
        t["kiosk top-1 >= float - 1 pt"] = (
            f"{k['int8_top1'] * 100:.2f} % vs {k['float_kiosk_top1'] * 100:.2f} %",
            k["int8_top1"] >= k["float_kiosk_top1"] - 0.01,
        )
    if "rss_growth_after_warmup_mb" in r.get("soak", {}):
        g, n = r["soak"]["rss_growth_after_warmup_mb"], r["soak"]["frames"]
        t["RSS growth <= 5 MB in LIVE_STREAM"] = (f"{g} MB over {n:,} frames", g <= 5)
    if "channels" in r:
        t.update(channels.targets(r["channels"]))
    t.update(size_targets(r))
    if "embedding" in r.get("search", {}):
        sr = r["search"]
        cos, p10 = sr["embedding"]["cosine_mean"], sr["precision_at_10_clean"]
        t["embedding cosine float vs int8 >= 0.98 (mean)"] = (f"{cos:.4f}", cos >= 0.98)
        t["same-category precision@10 >= 0.90 (clean queries)"] = (f"{p10:.3f}", p10 >= 0.90)
    if "search_scale" in r:
        t.update(search_scale.targets(r["search_scale"]))
    return t
