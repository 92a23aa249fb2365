"""One peer of the SDK comparison, measured in its own process so peak RSS is its own.

    python -m benchmarks.peers PEER --model M.tflite --frames F.npy [--runs N] [--threads T]

PEER is one of: invoke, naive (cvtColor + resize + float normalize + set_tensor), mediapipe,
shoplens, shoplens-video, shoplens-live, shoplens-gate, shoplens-colour.
Prints one JSON object: per-frame p50/p95 ms, frames/s, first-inference ms, RSS after import,
after load and at the end (peak), and the top-1 index of every distinct frame (for agreement).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import ROOT

PEERS = ("invoke", "naive", "mediapipe", "shoplens", "shoplens-video", "shoplens-live", "shoplens-gate",
         "shoplens-colour")  # fmt: skip


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """VmHWM, the process's own peak (ru_maxrss would carry the parent's peak across exec)."""
    return _status_mb("VmHWM")


def _time_loop(step: Callable[[int], int], frames: np.ndarray, runs: int, warmup: int = 50) -> dict:
    t0 = time.perf_counter()
    step(0)
    first_ms = (time.perf_counter() - t0) * 1e3
    for i in range(warmup):
        step(i)
    times = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        step(i)
        times[i] = time.perf_counter() - t
    ms = times * 1e3
    return {
        "first_ms": round(first_ms, 3),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p95_ms": round(float(np.percentile(ms, 95)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "fps": round(float(runs / times.sum()), 1),
        "runs": runs,
    }


def _litert(model: str, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=model, num_threads=threads)
    it.allocate_tensors()
    return it


def run(peer: str, model: str, frames: np.ndarray, runs: int, threads: int) -> dict:
    import cv2

    n = len(frames)
    top1 = [-1] * n
    rss_import = rss_mb()
    extra: dict = {}
    if peer in ("invoke", "naive"):
        it = _litert(model, threads)
        inp = it.get_input_details()[0]
        out = it.get_output_details()[0]
        _, h, w, _ = inp["shape"]
        scale, zp = inp["quantization"]
        # the naive loop follows the model's contract too (resize filter), as a careful user would
        from shoplens.contract import Interpolation
        from shoplens.preprocess import resize_box
        from shoplens.tflite_model import read_model_info

        meta = read_model_info(model).shoplens_metadata or {}
        interp = Interpolation(meta.get("contract", {}).get("interpolation", "area"))
        rss_load = rss_mb()
        if peer == "invoke":
            it.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))

            def step(i: int) -> int:
                it.invoke()
                return 0
        else:

            def step(i: int) -> int:
                f = frames[i % n]
                fh, fw = f.shape[:2]
                s = min(fh, fw)
                crop = f[(fh - s) // 2 : (fh - s) // 2 + s, (fw - s) // 2 : (fw - s) // 2 + s]
                rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
                small = resize_box(rgb, (0, 0, s, s), (w, h), interp)
                x = (small.astype(np.float32) - 127.5) / 127.5
                q = np.clip(np.rint(x / scale + zp), 0, 255).astype(inp["dtype"])
                it.set_tensor(inp["index"], q[None])
                it.invoke()
                k = int(np.argmax(it.get_tensor(out["index"])[0]))
                top1[i % n] = k
                return k
    elif peer == "mediapipe":
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
        from mediapipe.tasks.python.components.containers import rect as mp_rect

        opts = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model), max_results=3)
        clf = vision.ImageClassifier.create_from_options(opts)
        fh, fw = frames[0].shape[:2]
        s = min(fh, fw)
        roi = mp_rect.RectF(
            left=(fw - s) / 2 / fw, top=(fh - s) / 2 / fh, right=(fw + s) / 2 / fw, bottom=(fh + s) / 2 / fh
        )
        ipo = vision.ImageProcessingOptions(region_of_interest=roi)
        rss_load = rss_mb()

        def step(i: int) -> int:
            # MediaPipe wants RGB; the conversion is part of its cost with a BGR camera
            img = mp.Image(
                image_format=mp.ImageFormat.SRGB, data=cv2.cvtColor(frames[i % n], cv2.COLOR_BGR2RGB)
            )
            r = clf.classify(img, ipo)
            k = r.classifications[0].categories[0].index
            top1[i % n] = k
            return k

        extra["close"] = clf.close
    else:
        from shoplens.classifier import Classifier
        from shoplens.colour import ColourOptions
        from shoplens.quality import QualityOptions

        mode = {"shoplens-video": "video", "shoplens-live": "live_stream"}.get(peer, "image")
        colour = ColourOptions(enabled=peer == "shoplens-colour")
        quality = QualityOptions(policy="warn" if peer == "shoplens-gate" else "off")
        done = []
        kw = (
            {"result_callback": lambda r, f, ts: done.append(r.top.index if r.top else -1)}
            if mode == "live_stream"
            else {}
        )
        clf = Classifier.create_from_model_path(
            model, num_threads=threads, running_mode=mode, quality=quality, colour=colour, **kw
        )
        rss_load = rss_mb()
        if mode == "image":

            def step(i: int) -> int:
                k = clf.classify(frames[i % n]).top.index
                top1[i % n] = k
                return k
        elif mode == "video":
            clock = iter(range(33, 10**12, 33))  # the timed loop revisits indices; time must move on

            def step(i: int) -> int:
                return clf.classify_for_video(frames[i % n], next(clock)).top.index
        else:
            # throughput: a camera delivering a frame every 0.25 ms (faster than the worker can
            # classify); count what the worker gets through. A tight loop without the pause would
            # starve the worker of the GIL and measure Python's scheduler, not the SDK.
            t0 = time.perf_counter()
            for i in range(runs):
                clf.classify_async(frames[i % n], i + 1)
                time.sleep(0.00025)
            clf.wait_idle(60)
            elapsed = time.perf_counter() - t0
            st = clf.stream_stats
            clf.close()
            return {
                "peer": peer,
                "fps": round(st.processed / elapsed, 1),
                "submitted": st.submitted,
                "processed": st.processed,
                "dropped": st.dropped,
                "rss_import_mb": round(rss_import, 1),
                "rss_load_mb": round(rss_load, 1),
                "rss_end_mb": round(rss_mb(), 1),
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }
        extra["close"] = clf.close
    res = _time_loop(step, frames, runs)
    for i in range(n):  # fill in any frame the timed loop skipped
        if top1[i] < 0 and peer not in ("invoke", "shoplens-video"):
            top1[i] = step(i)
    if peer in ("invoke", "shoplens-video"):
        top1 = []  # no per-frame prediction (invoke) or smoothed over time (video): no agreement
    if "close" in extra:
        extra["close"]()
    res.update(
        peer=peer,
        top1=top1,
        rss_import_mb=round(rss_import, 1),
        rss_load_mb=round(rss_load, 1),
        rss_end_mb=round(rss_mb(), 1),
        peak_rss_mb=round(peak_rss_mb(), 1),
    )
    return res


def _measure(peer: str, model: Path, frames_path: Path, runs: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.peers", peer, "--model", str(model), "--frames", str(frames_path),
         "--runs", str(runs)],
        capture_output=True, text=True, cwd=ROOT, timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run_peers(model: Path, frames_path: Path, runs: int, peers: tuple[str, ...] = PEERS, *,
              rounds: int = 1) -> dict:  # fmt: skip
    """Each peer in its own process, ``rounds`` times interleaved (every peer once a round), so a
    slow spell of this shared machine falls on all peers alike. A peer's figures are those of its
    median round by p50 (with its frames/s), and ``rounds_p50_ms`` / ``rounds_fps`` keep every round.
    """
    seen: dict[str, list[dict]] = {peer: [] for peer in peers}
    for _ in range(rounds):
        for peer in peers:
            seen[peer].append(_measure(peer, model, frames_path, runs))
    res = {}
    for peer, got in seen.items():
        ok = sorted((r for r in got if "error" not in r), key=lambda r: r.get("p50_ms") or 0.0)
        if not ok:
            res[peer] = got[-1]
            continue
        res[peer] = dict(ok[(len(ok) - 1) // 2])
        if rounds > 1:
            res[peer]["rounds_p50_ms"] = [r.get("p50_ms") for r in got if "error" not in r]
            res[peer]["rounds_fps"] = [r.get("fps") for r in got if "error" not in r]
        print(f"  {peer:<15} {res[peer].get('fps', '?')} frames/s", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("peer", choices=PEERS)
    ap.add_argument("--model", required=True)
    ap.add_argument("--frames", required=True)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    frames = np.load(args.frames)
    res = run(args.peer, args.model, frames, args.runs, args.threads)
    sys.stdout.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
