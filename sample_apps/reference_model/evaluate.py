"""Re-evaluate the committed reference model and record the figures in training_log.json.

    .venv/bin/python sample_apps/reference_model/evaluate.py

Top-1 of the float Keras model on the full 10k Fashion-MNIST test set, and on 2,000 good kiosk
frames rendered from the test split (seed 2026, no deliberately bad frames), both through the
SDK preprocessing with the model's contract.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.data import load_fashion_mnist
from shoplens.data.kiosk import iter_kiosk_frames
from shoplens.preprocess import Preprocessor
from shoplens_convert.load import load_keras_model

HERE = Path(__file__).resolve().parent
KIOSK_SEED = 2026
KIOSK_FRAMES = 2000


def top1(model, frames, labels, contract: PreprocessContract, batch: int = 250) -> float:
    pre = Preprocessor(contract, input_order="BGR")
    buf = np.empty((batch, *pre.out_shape), np.float32)
    hits = n = 0
    chunk: list[tuple[np.ndarray, int]] = []

    def flush() -> None:
        nonlocal hits, n
        for i, (f, _) in enumerate(chunk):
            pre(f, buf[i])
        p = np.argmax(np.asarray(model(buf[: len(chunk)], training=False)), axis=1)
        hits += int(np.sum(p == np.array([lab for _, lab in chunk])))
        n += len(chunk)
        chunk.clear()

    for f, lab in zip(frames, labels, strict=True):
        chunk.append((f, int(lab)))
        if len(chunk) == batch:
            flush()
    if chunk:
        flush()
    return hits / n


def main() -> int:
    t0 = time.time()
    loaded = load_keras_model(HERE / "product_cnn.keras")
    contract = PreprocessContract.load(HERE / "contract.json")
    x, y = load_fashion_mnist("test")
    test = top1(loaded.model, x, y, contract)
    gen = iter_kiosk_frames(x, y, KIOSK_FRAMES, seed=KIOSK_SEED)
    rows = list(gen)
    kiosk = top1(loaded.model, [f for f, _, _ in rows], [lab for _, lab, _ in rows], contract)
    log_path = HERE / "training_log.json"
    log = json.loads(log_path.read_text())
    log.update(
        test_top1=round(test, 4),
        kiosk_top1=round(kiosk, 4),
        kiosk_frames=KIOSK_FRAMES,
        kiosk_seed=KIOSK_SEED,
        kiosk_note="good frames only (bad_fraction 0), 640x480, rendered from the test split",
    )
    log_path.write_text(json.dumps(log, indent=2) + "\n")
    print(f"test top-1 {test:.4f} (10,000 images), kiosk top-1 {kiosk:.4f} ({KIOSK_FRAMES} frames), "
          f"{time.time() - t0:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
