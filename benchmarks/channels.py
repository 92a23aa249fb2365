"""Channel pruning on the reference model: the Pareto table (``make bench``; also on its own).

    .venv/bin/python -m benchmarks.channels                      # ratios 0.25, 0.5, 0.75 (about 2.5 h)
    .venv/bin/python -m benchmarks.channels --ratio 0.5 --epochs 6
    .venv/bin/python -m benchmarks.channels --ratio 0.5 --budget 0.274   # per-layer vs uniform, same MACs
    .venv/bin/python -m benchmarks.channels --quick              # a smoke run on small subsets

Each ratio runs the library pipeline (``shoplens convert --recipe int8 --prune-channels R``): the
slimmed model is fine-tuned on ``fashion-mnist:train[:N]`` and checked by the accuracy guard on the
full test set (10,000 images, top-1 drop with its 95 % CI against the float32 reference). Then the
dense int8 model and every slimmed one run side by side through the SDK on the same 640x480 kiosk
frames, taking turns frame by frame on one thread: invoke p50, whole-frame p50 and frames/s, so the
shared machine's noise falls on all of them alike. Writes ``benchmarks/results/channels-DATE.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import REF, ROOT
from shoplens.internal.atomic import atomic_write_text

RATIOS = (0.25, 0.5, 0.75)
EPOCHS = 6  # fine-tuning epochs of each slimmed model
OUT = ROOT / "out" / "channels"


def convert_ratio(
    ratio: float, train_n: int, epochs: int, eval_spec: str, budget: float | None = None
) -> dict[str, Any]:
    """One row: a uniform ``ratio``, or (``budget``) per-layer ratios to that share of the MACs."""
    from shoplens_convert.options import ConvertOptions
    from shoplens_convert.pipeline import convert

    o = ConvertOptions(
        recipe="int8",
        prune_channels=None if budget is not None else ratio,
        latency_budget=budget,
        train_data=f"fashion-mnist:train:{train_n}",
        prune_epochs=epochs,
        calib_data="fashion-mnist:train:300",
        eval_data=eval_spec,
        max_drop=100.0,  # measured here, not gated: the table shows the drop
        latency_runs=0,
    )
    t0 = time.perf_counter()
    res = convert(REF / "product_cnn.keras", o)
    out = OUT / (f"budget_{int(budget * 100)}" if budget is not None else f"ratio_{int(ratio * 100)}")
    res.save(out, overwrite=True)
    r = res.report
    c, acc = r["prune_channels"], r["accuracy"]
    return {
        "ratio": ratio if budget is None else None,
        "key": f"budget {budget:g}" if budget is not None else f"{ratio:.2f}",
        "budget": c["budget"],
        "model": str(out / "model.tflite"),
        "bytes": c["int8_bytes_after"],
        "dense_bytes": c["int8_bytes_before"],
        "params": [c["params_before"], c["params_after"]],
        "macs": [c["macs_before"], c["macs_after"]],
        "source_top1": acc["source_top1"],
        "top1": acc["converted_top1"],
        "drop_pts": acc["drop_pts"],
        "drop_ci95_pts": acc["drop_ci95_pts"],
        "eval_n": acc["n"],
        "fine_tune": c["fine_tune"],
        "convert_seconds": round(time.perf_counter() - t0, 1),
    }


def dense_int8() -> Path:
    from benchmarks.__main__ import build_int8_model

    OUT.mkdir(parents=True, exist_ok=True)
    return build_int8_model(OUT, 300)


def side_by_side(models: dict[str, Path], frames: np.ndarray, rounds: int) -> dict[str, dict[str, float]]:
    """Invoke and whole-frame p50 of each model, taking turns on every frame (1 thread)."""
    from shoplens import Classifier

    clfs = {k: Classifier.create_from_model_path(p, num_threads=1) for k, p in models.items()}
    total: dict[str, list[float]] = {k: [] for k in clfs}
    invoke: dict[str, list[float]] = {k: [] for k in clfs}
    try:
        for f in frames[:20]:
            for c in clfs.values():
                c.classify(f)
        names = list(clfs)
        for i in range(rounds):
            order = names[i % len(names) :] + names[: i % len(names)]
            for f in frames:
                for k in order:
                    t0 = time.perf_counter()
                    r = clfs[k].classify(f)
                    total[k].append(time.perf_counter() - t0)
                    invoke[k].append(r.timing.invoke_ms)
    finally:
        for c in clfs.values():
            c.close()
    out = {}
    for k in clfs:
        frame_ms = float(np.median(total[k])) * 1e3
        out[k] = {"invoke_p50_ms": round(float(np.median(invoke[k])), 4), "frame_p50_ms": round(frame_ms, 4),
                  "frames_per_s": round(1000.0 / frame_ms, 1)}  # fmt: skip
    return out


def run(
    quick: bool = False,
    ratios: tuple[float, ...] = RATIOS,
    epochs: int = EPOCHS,
    train_n: int = 58000,
    budgets: tuple[float, ...] = (),
) -> dict:
    from benchmarks.__main__ import kiosk_frames

    eval_spec = "fashion-mnist:test:500" if quick else "fashion-mnist:test"
    n, ep = (2000 if quick else train_n), (1 if quick else epochs)
    rows = [convert_ratio(r, n, ep, eval_spec) for r in ratios]
    rows += [convert_ratio(0.0, n, ep, eval_spec, budget=b) for b in budgets]
    frames, _, _ = kiosk_frames(50 if quick else 200, seed=99)
    models = {"dense": dense_int8(), **{r["key"]: Path(r["model"]) for r in rows}}
    speed = side_by_side(models, frames, 3 if quick else 15)
    for r in rows:
        s, d = speed[r["key"]], speed["dense"]
        r.update(s, invoke_ratio=round(s["invoke_p50_ms"] / d["invoke_p50_ms"], 3),
                 bytes_ratio=round(r["bytes"] / r["dense_bytes"], 3))  # fmt: skip
    return {"date": time.strftime("%Y-%m-%d"), "quick": quick, "epochs": 1 if quick else epochs,
            "train_images": 2000 if quick else train_n, "dense": speed["dense"], "rows": rows}  # fmt: skip


def targets(c: dict) -> dict[str, tuple[str, bool]]:
    half = next((r for r in c["rows"] if r["ratio"] == 0.5), None)
    if half is None:
        return {}
    lo, hi = half["drop_ci95_pts"]
    inv, size = half["invoke_ratio"], half["bytes_ratio"]
    return {
        "channel-pruned 50 %: invoke <= 0.55x dense int8": (f"{inv:.3f}x", inv <= 0.55),
        "channel-pruned 50 %: bytes <= 0.55x dense int8": (f"{size:.2f}x", size <= 0.55),
        "channel-pruned 50 %: top-1 drop <= 1.0 pt": (
            f"{half['drop_pts']:+.2f} pt (95 % CI {lo:+.2f} to {hi:+.2f})",
            half["drop_pts"] <= 1.0,
        ),
    }


def markdown(c: dict) -> list[str]:
    d = c["dense"]
    lines = [
        "",
        "## Channel pruning (structured)",
        "",
        "`benchmarks.channels`: `shoplens convert --recipe int8 --prune-channels R`, fine-tuned "
        f"{c['epochs']} epochs on {c['train_images']:,} training images, top-1 on the test set against the "
        "float32 reference; speed through the SDK on 640x480 kiosk frames, all models taking turns on "
        "every frame (1 thread). Unstructured pruning (Table 1) leaves the int8 model as large and as "
        "fast as the dense one; removing channels makes it smaller and faster.",
        "",
        "| channels removed | int8 bytes | invoke p50 | frame p50 | frames/s | top-1 | drop (95 % CI) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| 0 (dense int8) | - | {d['invoke_p50_ms']} ms | {d['frame_p50_ms']} ms | {d['frames_per_s']} "
        "| - | - |",
    ]
    for r in c["rows"]:
        lo, hi = r["drop_ci95_pts"]
        what = f"{100 * r['ratio']:.0f} %" if r.get("ratio") is not None else (
            f"per layer, MACs <= {r['budget']['budget_macs_share']:g}x")  # fmt: skip
        lines.append(
            f"| {what} | {r['bytes'] / 1024:.1f} KiB ({r['bytes_ratio']:.2f}x) | "
            f"{r['invoke_p50_ms']} ms ({r['invoke_ratio']:.2f}x) | {r['frame_p50_ms']} ms | "
            f"{r['frames_per_s']} | "
            f"{100 * r['top1']:.2f} % | {r['drop_pts']:+.2f} pt ({lo:+.2f} to {hi:+.2f}) |"
        )
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ratio", type=float, action="append", help="ratio (repeatable; default 0.25 0.5 0.75)")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--train-n", type=int, default=58000)
    ap.add_argument("--budget", type=float, action="append", default=[],
                    help="also per-layer ratios to this share of the MACs (--latency-budget; repeatable)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default: channels-DATE.json)")
    a = ap.parse_args()
    res = run(a.quick, tuple(a.ratio or RATIOS), a.epochs, a.train_n, tuple(a.budget))
    print("\n".join(markdown(res)))
    print(json.dumps(targets(res), indent=1))
    default = ROOT / "benchmarks" / "results" / f"channels-{res['date']}{'-quick' if a.quick else ''}.json"
    path = a.out or default
    atomic_write_text(path, json.dumps(res, indent=1) + "\n", overwrite=True)
