"""The product's colour on the labelled colour set (``shoplens.data.colour_set``), at full size.

    .venv/bin/python -m benchmarks.colour [--quick]

Per light (normal, dim, warm) and per mode: a single photo (no white balance), a kiosk stream
with ``white_balance="auto"`` (scored after 60 frames of warm-up), and under warm light a single
photo from a calibrated camera (fixed gains: the inverse of the light's cast, as a one-time gray
card gives; under the other two lights that mode is the photo mode). Painted items must be named with
their paint's name; gray items with any achromatic name. The crop is the reference model's (96x96
centre crop); the seeds differ from those the thresholds were tuned on (1 and 2).
"""

from __future__ import annotations

import collections
import json
import sys
import time

import numpy as np

from benchmarks import REF, ROOT
from shoplens.internal.atomic import atomic_write_text

SEEDS = {"normal": 31, "dim": 32, "warm": 33}
WARMUP = 60


def run(n: int = 1000) -> dict:
    from shoplens.colour import ACHROMATIC, WhiteBalance, colours_of
    from shoplens.contract import PreprocessContract
    from shoplens.data.colour_set import CONDITIONS, colour_samples
    from shoplens.preprocess import Preprocessor

    pre = Preprocessor(PreprocessContract.load(REF / "contract.json"))
    buf = np.empty(pre.out_shape, pre.out_dtype)
    out: dict = {"items_per_light": n, "rows": []}
    for mode in ("photo", "stream", "calibrated"):
        for light, seed in SEEDS.items():
            if mode == "calibrated" and light != "warm":
                continue
            cast = CONDITIONS[light][1]
            wb = WhiteBalance({"photo": None, "stream": "auto"}.get(mode, tuple(1 / g for g in cast)))
            right, grey, t = [], [], []
            errors: collections.Counter = collections.Counter()
            for i, s in enumerate(colour_samples(n + (WARMUP if mode == "stream" else 0), light, seed=seed)):
                resized = pre.process(s.frame, buf).resized
                t0 = time.perf_counter()
                cols = colours_of(resized, wb)
                t.append(time.perf_counter() - t0)
                if mode == "stream" and i < WARMUP:
                    continue
                top = cols[0].name if cols else "none"
                if s.truth == "gray":
                    grey.append(top in ACHROMATIC)
                    if top not in ACHROMATIC:
                        errors[f"gray as {top}"] += 1
                else:
                    right.append(top == s.truth)
                    if top != s.truth:
                        errors[f"{s.truth} as {top}"] += 1
            out["rows"].append({
                "mode": mode, "light": light, "painted": len(right), "gray": len(grey),
                "painted_right": round(float(np.mean(right)), 4),
                "gray_achromatic": round(float(np.mean(grey)), 4),
                "p50_us": round(float(np.median(t)) * 1e6, 1), "errors": errors.most_common(5),
            })  # fmt: skip
            print(f"  {mode:<6} {light:<6} painted {np.mean(right):.3f} gray {np.mean(grey):.3f}", flush=True)
    return out


def cost(model, frames: np.ndarray, rounds: int = 10) -> dict:
    """End-to-end ms per 640x480 frame with colour off and on, side by side: two classifiers on
    one thread take turns on every frame, so the shared machine's noise falls on both alike."""
    from shoplens import Classifier, ColourOptions
    from shoplens.colour import colour_engine

    off = Classifier.create_from_model_path(model, num_threads=1)
    on = Classifier.create_from_model_path(model, num_threads=1, colour=ColourOptions(enabled=True))
    t_off, t_on, colour_ms = [], [], []
    with off, on:
        for f in frames[:20]:  # warm-up
            off.classify(f)
            on.classify(f)
        for i in range(rounds):
            for f in frames:
                first, second = (off, on) if i % 2 == 0 else (on, off)
                for clf in (first, second):
                    t0 = time.perf_counter()
                    r = clf.classify(f)
                    (t_on if clf is on else t_off).append(time.perf_counter() - t0)
                    if clf is on:
                        colour_ms.append(r.timing.colour_ms)
    p_off, p_on = float(np.median(t_off)) * 1e3, float(np.median(t_on)) * 1e3
    return {
        "frames": len(t_on),
        "off_p50_ms": round(p_off, 4),
        "on_p50_ms": round(p_on, 4),
        "colour_p50_ms": round(float(np.median(colour_ms)), 4),
        "extra": round(p_on / p_off - 1, 4),
        "engine": colour_engine(),  # numba (shoplens[colour]) or numpy; SHOPLENS_COLOUR_ENGINE=numpy
    }


def targets(c: dict) -> dict[str, tuple[str, bool]]:
    rows = {(r["mode"], r["light"]): r for r in c["rows"]}
    out = {}
    k = c.get("cost")
    if k:
        out["product colour costs <= 10 % of the frame (640x480, side by side)"] = (
            f"{k['extra'] * 100:+.1f} % ({k['off_p50_ms']} -> {k['on_p50_ms']} ms)",
            k["extra"] <= 0.10,
        )
    n = rows.get(("photo", "normal"))
    if n:
        out["colour named right >= 95 % (normal light)"] = (
            f"{100 * n['painted_right']:.1f} %",
            n["painted_right"] >= 0.95,
        )
    for light in ("dim", "warm"):
        p, s = rows.get(("photo", light)), rows.get(("stream", light))
        if p and s:
            out[f"colour named right >= 90 % ({light} light)"] = (
                f"photo {100 * p['painted_right']:.1f} %, stream {100 * s['painted_right']:.1f} %",
                min(p["painted_right"], s["painted_right"]) >= 0.90,
            )
    for mode in ("photo", "stream", "calibrated"):
        g = [r["gray_achromatic"] for r in c["rows"] if r["mode"] == mode]
        if g:
            lights = "warm light: a calibrated camera" if mode == "calibrated" else "every light"
            out[f"gray items achromatic >= 98 % ({mode}, {lights})"] = (
                ", ".join(
                    f"{r['light']} {100 * r['gray_achromatic']:.1f} %" for r in c["rows"] if r["mode"] == mode
                ),
                min(g) >= 0.98,
            )
    return out


if __name__ == "__main__":
    res = run(200 if "--quick" in sys.argv else 1000)
    print(json.dumps(res, indent=2))
    print(json.dumps(targets(res), indent=2))
    atomic_write_text(ROOT / "benchmarks" / "results" / f"colour-{time.strftime('%Y-%m-%d')}.json",
                      json.dumps(res, indent=2), overwrite=True)  # fmt: skip
