"""Open-set answers on real images of classes the model never saw (issue 19's last kind).

    .venv/bin/python -m benchmarks.held_out [--hold 8 --hold 9] [--epochs 2] [--out out/held-out]

Trains the reference architecture (``sample_apps/reference_model/train.py``'s ``build_model`` and
its kiosk batches) from scratch on the Fashion-MNIST classes that are not held out, converts it
with the release recipe (int8 + embedding) and runs ``benchmarks.open_set`` with the held-out
classes' test items as one more kind of non-product; the catalog, the calibration frames and the
product frames then hold only the classes the model knows. The int8 calibration images are drawn
from the whole training split (input ranges only, no labels). Writes
``benchmarks/results/open-set-held-out-DATE.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import ROOT
from shoplens.internal.atomic import atomic_write_text


def train(out: Path, held_out: tuple[int, ...], epochs: int) -> Path:
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    import keras

    sys.path.insert(0, str(ROOT / "sample_apps" / "reference_model"))
    from train import KioskMix, build_model

    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist

    keep = [c for c in range(10) if c not in held_out]
    x, y = load_fashion_mnist("train")
    x, y = x[:58000], y[:58000]
    sel = np.isin(y, keep)
    remap = np.full(10, -1, np.int64)
    remap[keep] = np.arange(len(keep))
    keras.utils.set_random_seed(0)
    data = KioskMix(x[sel], remap[y[sel]], 128, 0.4, 0, workers=2)
    model = build_model(len(keep))
    steps = epochs * math.ceil(int(sel.sum()) / 128)
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, steps, alpha=0.01)
    loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=["accuracy"])
    model.fit(data, epochs=epochs, verbose=2)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "product_cnn_held_out.keras"
    model.save(path)
    (out / "labels.txt").write_text("\n".join(FASHION_MNIST_LABELS[c] for c in keep) + "\n", encoding="utf-8")
    shutil.copy(ROOT / "sample_apps" / "reference_model" / "contract.json", out / "contract.json")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.held_out", description=__doc__.split("\n\n")[0])
    ap.add_argument("--hold", type=int, action="append", help="class index to hold out (default: 8 and 9)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "held-out")
    ap.add_argument("--quick", action="store_true", help="the open-set evaluation's quick sizes")
    args = ap.parse_args(argv)
    held_out = tuple(sorted(set(args.hold or (8, 9))))
    if not held_out or any(not 0 <= c <= 9 for c in held_out) or len(held_out) > 5:
        ap.error("--hold takes one to five class indices in 0..9")
    t0 = time.time()
    keras_path = train(args.out, held_out, args.epochs)
    print(f"trained in {time.time() - t0:.0f} s", flush=True)
    release = args.out / "release"
    shoplens = str(Path(sys.executable).parent / "shoplens")
    subprocess.run([shoplens, "convert", str(keras_path), "--out", str(release), "--recipe", "int8",
                    "--embedding", "auto", "--calib-data", "fashion-mnist:train:300", "--overwrite"],
                   check=True)  # fmt: skip
    from benchmarks import open_set

    res = open_set.run(release, args.quick, held_out)
    res["epochs"] = args.epochs
    name = f"open-set-held-out-{res['date']}{'-quick' if args.quick else ''}.json"
    path = ROOT / "benchmarks" / "results" / name
    atomic_write_text(path, json.dumps(res, indent=1) + "\n", overwrite=True)
    print(json.dumps(open_set.targets(res)))
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
