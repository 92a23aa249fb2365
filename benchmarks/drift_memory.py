"""``shoplens drift`` streams: resident memory over 120,000 images stays flat.

    .venv/bin/python -m benchmarks.drift_memory [MODEL.tflite]     # about 3 minutes here

Runs :func:`shoplens.drift.run_drift` with the given int8 model (default: the demo's
``out/demo/model/model.tflite``) as both reference and candidate over the Fashion-MNIST training
split streamed twice (120,000 images, no copy), sampling the process's RSS every 0.2 s.
Prints, and writes ``benchmarks/results/drift-memory-<date>.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import ROOT
from shoplens.data.datasets import Batch, Dataset
from shoplens.internal.atomic import atomic_write_text


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        import os

        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Cycled(Dataset):
    """``repeats`` passes over an image array, yielded in batches without copying it."""

    images: np.ndarray = field(default_factory=lambda: np.empty((0, 1, 1), np.uint8))
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    repeats: int = 2

    def __len__(self) -> int:
        return len(self.images) * self.repeats

    def batches(self, batch_size: int = 64) -> Iterator[Batch]:
        n = len(self.images)
        for s in range(0, len(self), batch_size):
            idx = np.arange(s, min(s + batch_size, len(self))) % n
            yield Batch(
                [self.images[i] for i in idx], self.labels[idx], [f"{i}" for i in range(s, s + len(idx))]
            )


def main(argv: list[str]) -> None:
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
    from shoplens.drift import TFLiteDriftModel, run_drift

    model = Path(argv[0]) if argv else ROOT / "out/demo/model/model.tflite"
    if not model.is_file():
        sys.exit(f"{model} is missing: run 'make demo' first or pass an int8 .tflite")
    x, y = load_fashion_mnist("train")
    ds = Cycled(name="fashion-mnist:train x2", label_names=FASHION_MNIST_LABELS, images=x,
                labels=y.astype(np.int64), repeats=2)  # fmt: skip
    ref, cand = TFLiteDriftModel(model), TFLiteDriftModel(model)
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.perf_counter(), rss_mb()))
            time.sleep(0.2)

    start_rss = rss_mb()
    t = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    t.start()
    report = run_drift(ref, cand, ds, cause_sample=0, analyse=False)
    done.set()
    t.join()
    secs = time.perf_counter() - t0
    rss = [r for _, r in samples]
    k = len(rss)
    out = {
        "images": report.n,
        "seconds": round(secs, 1),
        "images_per_s": round(report.n / secs, 1),
        "rss_mb_before": round(start_rss, 1),
        "rss_mb_at_10pct": round(rss[k // 10], 1),
        "rss_mb_at_50pct": round(rss[k // 2], 1),
        "rss_mb_at_end": round(rss[-1], 1),
        "rss_mb_peak": round(max(rss), 1),
        "growth_10pct_to_end_mb": round(rss[-1] - rss[k // 10], 1),
        "agreement": report.agreement,
        "model": str(model),
    }
    print(json.dumps(out, indent=2))
    res = ROOT / "benchmarks" / "results" / f"drift-memory-{dt.date.today().isoformat()}.json"
    atomic_write_text(res, json.dumps(out, indent=2) + "\n", overwrite=True)


if __name__ == "__main__":
    main(sys.argv[1:])
