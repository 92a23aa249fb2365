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
    ap.add_argument("--page", type=Path, default=None, help="also write this Markdown page of the figures")
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
    # pretrained weights come with converged BatchNorm statistics; a short run's moving averages
    # (momentum 0.99) have not converged yet, so set them from 1,000 real images, once
    bns = [ly for ly in backbone.layers if isinstance(ly, keras.layers.BatchNormalization)]
    for ly in bns:
        ly.momentum = 0.0
    backbone(xa[:1000], training=True)
    for ly in bns:
        ly.momentum = 0.99
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
    if args.page is not None:
        args.page.write_text(render_page(steps, quick=args.quick), encoding="utf-8")
    print(json.dumps(steps, indent=1))
    return proc.returncode


def render_page(steps: dict, *, quick: bool) -> str:  # type: ignore[type-arg]
    d = steps["data"]
    s2, s3 = steps["2_frozen_backbone_new_head"], steps["3_fine_tuned"]
    s4 = steps["4_qat_int8_under_the_guard"]
    pct = lambda v: "-" if v is None else f"{100 * v:.2f} %"  # noqa: E731
    return "\n".join([
        "# Transfer learning: a Keras Applications backbone to a QAT int8 model",
        "",
        f"Generated by `python {Path(__file__).relative_to(ROOT)} --page docs/transfer_learning.md`"
        f"{' --quick' if quick else ''} (`make zoo` runs it); do not edit by hand.",
        "",
        "No ImageNet weights can be downloaded here, so the backbone (MobileNetV3Small, hard-swish, "
        "squeeze-and-excite, its own `Rescaling`) is pretrained by the script on Fashion-MNIST classes "
        "0-4; the transfer task is classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot), which the "
        f"backbone never saw. {d['pretrain_images']:,} pretraining images, {d['transfer_images']:,} transfer "
        f"images, {d['test_images']:,} held-out test images of classes 5-9, {d['size']}x{d['size']} input.",
        "",
        "| step | top-1 on the test images | seconds |",
        "| --- | ---: | ---: |",
        "| 1. pretrain the backbone on classes 0-4 (stands in for ImageNet weights) | train accuracy "
        f"{pct(steps['1_pretrain_backbone_on_classes_0_4']['train_accuracy'])} | "
        f"{steps['1_pretrain_backbone_on_classes_0_4']['seconds']} |",
        "| 2. frozen backbone, new `GlobalAveragePooling2D + Dense(5)` head | "
        f"{pct(s2['top1'])} | {s2['seconds']} |",
        f"| 3. unfrozen, fine-tuned at a 10x lower learning rate | {pct(s3['top1'])} | {s3['seconds']} |",
        f"| 4. `shoplens convert --recipe qat-int8 --max-drop 1` (the Keras model, as handed over) | "
        f"{pct(s4['int8_top1'])} (Keras: {pct(s4['keras_top1'])}) | {s4['seconds']} |",
        "",
        f"The conversion {'was accepted' if s4['accepted'] else 'was REJECTED'} by the guard: top-1 drop "
        f"{s4['drop_pts']} pt (95 % CI {s4['drop_ci95_pts']}), agreement {pct(s4['agreement'])}, "
        f"{s4['bytes']:,} bytes ({s4['ratio_to_float32']}x the float32 model).",
        "",
        "What the converter did, from the report: the nested backbone "
        f"({', '.join(s4['nested_models_flattened'] or [])}) was flattened into one tf-keras model; its "
        f"`Rescaling` was {s4['input_preprocessing']}; QAT ran with fallback configs on "
        f"{s4['qat_fallback_layers']} layers TFMOT's scheme lacks (hard-swish, the operation nodes of the "
        "hard sigmoid, the squeeze-and-excite `Multiply`).",
        "",
        "Run it yourself:",
        "",
        "```bash",
        ".venv/bin/python sample_apps/transfer_learning/train.py --out out/transfer",
        "```",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
