"""Soak: LIVE_STREAM on the generated kiosk video for a million frames (``make soak``).

    .venv/bin/python -m benchmarks.soak [--frames 1000000] [--model M.tflite]

The video's frames (a kiosk video rendered by the generator, blurred and overexposed segments
included) are decoded once and submitted round-robin to one LIVE_STREAM classifier with smoothing
and the quality gate, each submission waiting until the worker has taken the previous frame (a
camera at the speed of the model). Reports RSS at the start, middle and end, every frame's
outcome (processed, rejected, dropped), and end-to-end latency p50/p95 per tenth of the run, to
see drift. Writes ``benchmarks/results/soak-<date>.json``. Target: RSS growth <= 5 MB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks import ROOT
from shoplens.internal.atomic import atomic_write_text


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def video_frames(n: int = 240) -> list[np.ndarray]:
    import cv2

    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
    from shoplens.data.kiosk import KioskConfig, generate_kiosk

    out = ROOT / "out" / "soak_video"
    if not (out / "ground_truth.csv").is_file():
        x, y = load_fashion_mnist("test")
        generate_kiosk(out, x, y.tolist(), FASHION_MNIST_LABELS, n_frames=n, seed=7, video=True,
                       segment_frames=30, config=KioskConfig(bad_fraction=0.25), overwrite=True)  # fmt: skip
    cap = cv2.VideoCapture(str(out / "kiosk.avi"))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def run(model: Path, total: int) -> dict:
    from shoplens.classifier import Classifier
    from shoplens.options import BaseOptions, ImageClassifierOptions, RunningMode, SmoothingOptions
    from shoplens.quality import QualityOptions, QualityPolicy

    frames = video_frames()
    # latencies go into a preallocated array, so the harness itself does not grow while it measures
    tenth = max(1, total // 10)
    lat = np.zeros(tenth, np.float64)
    n_lat = [0]
    sent = np.zeros(64, np.float64)  # submit time by ts % 64 (a dropped frame's slot is reused)
    lock = threading.Lock()

    def on_result(result: object, frame: object, ts: int) -> None:
        dt = (time.perf_counter() - sent[ts % 64]) * 1e3
        with lock:
            if n_lat[0] < len(lat):
                lat[n_lat[0]] = dt
                n_lat[0] += 1

    opts = ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=model, num_threads=1),
        running_mode=RunningMode.LIVE_STREAM, result_callback=on_result,
        smoothing=SmoothingOptions(), quality=QualityOptions(policy=QualityPolicy.REJECT),
    )  # fmt: skip
    rss = {"start": round(rss_mb(), 2)}
    tenths: list[dict] = []
    t0 = time.perf_counter()
    with Classifier(opts) as clf:
        for i in range(total):
            ts = i + 1
            sent[ts % 64] = time.perf_counter()
            clf.classify_async(frames[i % len(frames)], ts)
            if i % 2 == 1:  # let the worker keep up with every other frame: some frames are dropped
                clf.wait_idle(5)
            if i == 1000:
                rss["after_1000"] = round(rss_mb(), 2)
            if i == total // 2:
                rss["middle"] = round(rss_mb(), 2)
            if (i + 1) % tenth == 0:
                with lock:
                    chunk = lat[: n_lat[0]].copy()
                    n_lat[0] = 0
                tenths.append({"frames": i + 1, "p50_ms": round(float(np.percentile(chunk, 50)), 3),
                               "p95_ms": round(float(np.percentile(chunk, 95)), 3)})  # fmt: skip
                print(f"{i + 1:>9} frames, RSS {rss_mb():.1f} MB, p95 {tenths[-1]['p95_ms']} ms", flush=True)
        clf.wait_idle(10)
        stats = clf.stream_stats.to_dict()
    rss["end"] = round(rss_mb(), 2)
    accounted = stats["processed"] + stats["dropped"] + stats["rejected_invalid"] + stats["rejected_quality"]
    return {
        "frames": total,
        "seconds": round(time.perf_counter() - t0, 1),
        "rss_mb": rss,
        "rss_growth_after_warmup_mb": round(rss["end"] - rss.get("after_1000", rss["start"]), 2),
        "stream_stats": stats,
        "all_frames_accounted": accounted == stats["submitted"] == total,
        "latency_by_tenth": tenths,
        "p95_drift_ms": round(tenths[-1]["p95_ms"] - tenths[0]["p95_ms"], 3) if tenths else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="LIVE_STREAM soak")
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument(
        "--model", type=Path, default=None, help="default: the reference int8 model make bench builds"
    )
    ap.add_argument("--no-save", action="store_true", help="print one JSON line, write no results file")
    args = ap.parse_args(argv)
    if args.model is None:
        from benchmarks.__main__ import build_int8_model

        (ROOT / "out" / "bench").mkdir(parents=True, exist_ok=True)
        args.model = build_int8_model(ROOT / "out" / "bench", 300)
    res = run(args.model, args.frames)
    if args.no_save:  # used by `make bench`, which keeps the figures in its own results file
        print(json.dumps(res))
        return 0
    print(json.dumps(res, indent=2))
    atomic_write_text(ROOT / "benchmarks" / "results" / f"soak-{dt.date.today().isoformat()}.json",
                      json.dumps(res, indent=2) + "\n", overwrite=True)  # fmt: skip
    return 0 if res["rss_growth_after_warmup_mb"] <= 5 and res["all_frames_accounted"] else 1


if __name__ == "__main__":
    sys.exit(main())
