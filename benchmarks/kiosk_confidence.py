"""The kiosk's "not sure" threshold, chosen on data (``sample_apps/kiosk``, ``--confident``).

    .venv/bin/python -m benchmarks.kiosk_confidence [--frames 6000]

A kiosk video of Fashion-MNIST test items (the kiosk generator, 30 frames per item, a quarter of the
items shown badly) runs through the classifier as the kiosk runs it: VIDEO mode, smoothing, the
quality gate rejecting bad frames. On every frame the gate passes, the smoothed top score and
whether the top label is right are kept. The threshold is the lowest score at which the answers
shown as confident are right at least ``PRECISION`` of the time; below it the page says "not sure".
The video's seed (11) is not the one the kiosk tests use (7).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks import ROOT
from shoplens.internal.atomic import atomic_write_text

PRECISION = 0.95  # one confident answer in twenty may be wrong; below the threshold: "not sure"
GRID = [round(0.30 + 0.05 * i, 2) for i in range(14)]  # 0.30 ... 0.95


def measure(model: Path, frames: int = 6000, seed: int = 11) -> dict:
    from shoplens import Classifier, QualityOptions, QualityPolicy, RunningMode, SmoothingOptions
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
    from shoplens.data.kiosk import KioskConfig, generate_kiosk

    x, y = load_fashion_mnist("test")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "video"
        generate_kiosk(out, x, y.tolist(), FASHION_MNIST_LABELS, n_frames=frames, seed=seed, video=True,
                       segment_frames=30, config=KioskConfig(bad_fraction=0.25))  # fmt: skip
        with (out / "ground_truth.csv").open() as fh:
            truth = list(csv.DictReader(fh))
        cap = cv2.VideoCapture(str(out / "kiosk.avi"))
        scores, right = [], []
        with Classifier.create_from_model_path(
            model,
            running_mode=RunningMode.VIDEO,
            smoothing=SmoothingOptions(),
            quality=QualityOptions(policy=QualityPolicy.REJECT),
        ) as clf:
            for i, row in enumerate(truth):
                ok, frame = cap.read()
                if not ok:
                    break
                r = clf.classify_for_video(frame, 1 + i * 66)
                if r.rejected or not r.categories:
                    continue
                scores.append(r.categories[0].score)
                right.append(r.categories[0].label == row["label_name"])
        cap.release()
    s, ok_ = np.asarray(scores), np.asarray(right)
    table = []
    for t in GRID:
        shown = s >= t
        table.append({"threshold": t, "coverage": round(float(shown.mean()), 4),
                      "precision": round(float(ok_[shown].mean()), 4) if shown.any() else None})  # fmt: skip
    chosen = next((r for r in table if r["precision"] is not None and r["precision"] >= PRECISION), table[-1])
    return {"frames": frames, "answered": len(s), "top1_all": round(float(ok_.mean()), 4),
            "target_precision": PRECISION, "chosen": chosen, "table": table}  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "out" / "demo" / "model" / "model.tflite")
    ap.add_argument("--frames", type=int, default=6000)
    args = ap.parse_args()
    res = measure(args.model, args.frames)
    print(json.dumps(res, indent=1))
    out = ROOT / "benchmarks" / "results" / f"kiosk-confidence-{time.strftime('%Y-%m-%d')}.json"
    atomic_write_text(out, json.dumps(res, indent=1) + "\n", overwrite=True)
