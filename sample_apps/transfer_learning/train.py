"""Transfer learning with a Keras Applications backbone, then ``qat-int8`` under the accuracy guard.

What an ML engineer does with ``keras.applications``, end to end, with the measured top-1 of every
step. Nothing can be downloaded here, so ImageNet weights are replaced by a backbone this script
pretrains itself on the *other* half of the catalog: MobileNetV3Small (hard-swish, squeeze-and-
excite, its own in-model ``Rescaling``) learns Fashion-MNIST classes 0-4 (T-shirt, Trouser,
Pullover, Dress, Coat); the transfer task is classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle
boot), which it has never seen.

1. pretrain the backbone on classes 0-4 (the "ImageNet" step);
2. freeze it, put ``GlobalAveragePooling2D + Dense(5)`` on top, train the head on classes 5-9;
3. unfreeze and fine-tune the whole model at a low learning rate;
4. save the Keras 3 ``Sequential([backbone, pooling, head])`` as a user would hand it over, and
   convert it with ``shoplens convert --recipe qat-int8 --max-drop 1`` (a real subprocess): the
   bridge flattens the nested backbone, composes its ``Rescaling`` into the contract, and QAT
   runs with fallback configs for the layers TFMOT's scheme lacks.

Run (about 4 min on 2 CPU cores; ``--quick`` is the small CI version):

    .venv/bin/python sample_apps/transfer_learning/train.py --out out/transfer

Writes OUT/model.keras (+ contract.json, labels.txt), OUT/int8/ (the converted model and its
report) and OUT/steps.json with the top-1 of each step on the held-out test images of classes 5-9.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[2]
SIZE = 48
PRETRAIN, TRANSFER = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)


def _split(x, y, classes):  # type: ignore[no-untyped-def]
    import numpy as np

    keep = np.isin(y, classes)
    remap = {c: i for i, c in enumerate(classes)}
    return x[keep], np.array([remap[int(v)] for v in y[keep]], np.int64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "transfer")
    ap.add_argument("--quick", action="store_true", help="small data and one epoch per step (CI)")
    args = ap.parse_args(argv)
    import keras
    import numpy as np

    from shoplens.contract import PreprocessContract
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
    from shoplens.preprocess import preprocess_batch

    n_pre, n_tr, n_test, epochs = (3000, 1500, 500, 1) if args.quick else (30000, 15000, 5000, 4)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    # raw pixels: MobileNetV3 normalizes its input itself (Rescaling(1/127.5, -1))
    contract = PreprocessContract(SIZE, SIZE, 3, color_order="RGB", mean=(0.0,), std=(1.0,),
                                  interpolation="linear", crop="center")  # fmt: skip
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    xa, ya = _split(xtr, ytr, PRETRAIN)
    xb, yb = _split(xtr, ytr, TRANSFER)
    xt, yt = _split(xte, yte, TRANSFER)
    xa, ya, xb, yb, xt, yt = xa[:n_pre], ya[:n_pre], xb[:n_tr], yb[:n_tr], xt[:n_test], yt[:n_test]
    xa, xb, xt = (preprocess_batch(v, contract) for v in (xa, xb, xt))
    keras.utils.set_random_seed(0)
    steps: dict[str, object] = {"data": {"pretrain_images": len(xa), "transfer_images": len(xb),
                                         "test_images": len(xt), "size": SIZE}}  # fmt: skip

    def top1(model: object) -> float:
        return float(np.mean(np.argmax(np.asarray(model.predict(xt, verbose=0)), 1) == yt))  # type: ignore[attr-defined]

    t0 = time.perf_counter()
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, minimalistic=False,
    )  # fmt: skip
    pre = keras.Sequential([keras.Input((SIZE, SIZE, 3)), backbone, keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(len(PRETRAIN), activation="softmax")])  # fmt: skip
    pre.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = pre.fit(xa, ya, batch_size=64, epochs=epochs * 2, verbose=0)
    steps["1_pretrain_backbone_on_classes_0_4"] = {
        "train_accuracy": round(float(hist.history["accuracy"][-1]), 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    t0 = time.perf_counter()
    backbone.trainable = False
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), backbone, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(len(TRANSFER), activation="softmax", name="head")],
                             name="transfer_mobilenetv3small")  # fmt: skip
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xb, yb, batch_size=64, epochs=epochs, verbose=0)
    steps["2_frozen_backbone_new_head"] = {"top1": round(top1(model), 4),
                                           "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    t0 = time.perf_counter()
    backbone.trainable = True
    for layer in backbone.layers:  # BatchNorm statistics stay as pretrained (the usual practice)
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    model.compile(keras.optimizers.Adam(2e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xb, yb, batch_size=64, epochs=epochs, verbose=0)
    steps["3_fine_tuned"] = {"top1": round(top1(model), 4), "seconds": round(time.perf_counter() - t0, 1)}
    model.save(out / "model.keras")
    (out / "contract.json").write_text(contract.to_json() + "\n", encoding="utf-8")
    labels = [FASHION_MNIST_LABELS[c] for c in TRANSFER]
    (out / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    # the test images of classes 5-9 as a class-per-folder directory: the guard's data
    import cv2

    test_dir = out / "test_5_9"
    for i, (img, lab) in enumerate(zip(xte[np.isin(yte, TRANSFER)][:n_test],
                                       yte[np.isin(yte, TRANSFER)][:n_test], strict=True)):  # fmt: skip
        d = test_dir / FASHION_MNIST_LABELS[int(lab)].replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i:05d}.png"), img)
    train_dir = out / "train_5_9"
    for i, (img, lab) in enumerate(zip(xtr[np.isin(ytr, TRANSFER)][:n_tr],
                                       ytr[np.isin(ytr, TRANSFER)][:n_tr], strict=True)):  # fmt: skip
        d = train_dir / FASHION_MNIST_LABELS[int(lab)].replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i:05d}.png"), img)
    t0 = time.perf_counter()
    cmd = [str(Path(sys.executable).parent / "shoplens"), "convert", str(out / "model.keras"),
           "--out", str(out / "int8"), "--recipe", "qat-int8", "--train-data", str(train_dir),
           "--calib-data", str(train_dir), "--eval-data", str(test_dir), "--max-drop", "1.0",
           "--overwrite", "--json", "--quiet"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    report = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    acc = report.get("accuracy") or {}
    steps["4_qat_int8_under_the_guard"] = {
        "exit_code": proc.returncode,
        "accepted": (report.get("status") or {}).get("accepted"),
        "keras_top1": acc.get("source_top1"),
        "int8_top1": acc.get("converted_top1"),
        "drop_pts": acc.get("drop_pts"),
        "drop_ci95_pts": acc.get("drop_ci95_pts"),
        "agreement": acc.get("agreement"),
        "bytes": (report.get("sizes") or {}).get("model_bytes"),
        "ratio_to_float32": (report.get("sizes") or {}).get("ratio_to_float32"),
        "input_preprocessing": (report.get("input_preprocessing") or {}).get("handling"),
        "nested_models_flattened": (report.get("bridge") or {}).get("nested_models_flattened"),
        "qat_fallback_layers": len(((report.get("qat") or {}).get("fallback_configs")) or {}),
        "seconds": round(time.perf_counter() - t0, 1),
        "error": proc.stderr.strip().splitlines()[-1] if proc.returncode and proc.stderr.strip() else None,
    }
    (out / "steps.json").write_text(json.dumps(steps, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(steps, indent=1))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
