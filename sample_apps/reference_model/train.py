"""Train the ShopLens reference product CNN on Fashion-MNIST (Keras 3).

Stands in for "the team's GPU-trained Keras CNN": a MobileNetV2-family classifier built only from
Edge-TPU-friendly ops (Conv2D, DepthwiseConv2D, BatchNorm, ReLU6, Add, GlobalAveragePooling,
Dense), taking 96x96x3 RGB input in [-1, 1] and predicting the 10 Fashion-MNIST classes.

Two fifths of every training batch is rendered by the kiosk scene generator (``shoplens.data.kiosk``)
so the model also works on camera-like frames; every image, clean or rendered, reaches the model
through the SDK's preprocessing (``shoplens.preprocess``) with the contract in ``contract.json``.

Run (uses a GPU when TensorFlow sees one, the CPU otherwise):

    .venv/bin/python sample_apps/reference_model/train.py --epochs 10 --out sample_apps/reference_model

Writes ``product_cnn.keras``, ``labels.txt``, ``contract.json`` and ``training_log.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.pop("TF_USE_LEGACY_KERAS", None)  # this script is written against Keras 3

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from shoplens.contract import PreprocessContract
from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
from shoplens.data.kiosk import render_scene
from shoplens.preprocess import Preprocessor

# Bilinear resize: the filter every mobile image stack offers with stock APIs (Android's bitmap
# scaling, Core Image, MediaPipe's image-to-tensor converter), and 3-4x cheaper than area
# averaging on a 640x480 camera frame.
CONTRACT = PreprocessContract.from_range(
    96, 96, -1.0, 1.0, color_order="RGB", interpolation="linear-mediapipe", crop="center"
)
BN_MOMENTUM = 0.9  # the Keras default (0.99) lags too much for short CPU runs


def _conv_bn(x, filters, kernel, stride, name, act=True):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if act else x


def _inverted_residual(x, expand, out, stride, name):
    cin = x.shape[-1]
    y = x
    if expand != 1:
        y = _conv_bn(y, cin * expand, 1, 1, f"{name}_expand")
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu6")(y)
    y = _conv_bn(y, out, 1, 1, f"{name}_project", act=False)
    if stride == 1 and cin == out:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


# (expansion, output channels, repeats, first stride) of the inverted-residual stages, as in the
# MobileNetV2 paper, narrowed and shortened for 96x96 product crops.
BLOCKS = ((4, 24, 1, 1), (4, 40, 3, 2), (4, 80, 3, 2), (4, 112, 1, 1))


def build_model(num_classes: int = 10) -> keras.Model:
    """MobileNetV2 with a fused first stage, as in MobileNet-EdgeTPU.

    A regular 3x3 conv replaces expand + depthwise at 48x48, where depthwise convs are slow to
    train on a CPU and gain nothing on the Edge TPU. It halves training time here.
    """
    inp = keras.Input((CONTRACT.height, CONTRACT.width, 3), name="image")
    x = _conv_bn(inp, 16, 3, 2, "stem")  # 48x48
    x = _conv_bn(x, 64, 3, 2, "fused")  # 24x24
    x = _conv_bn(x, 24, 1, 1, "fused_project", act=False)
    for b, (t, c, n, s) in enumerate(BLOCKS):
        for r in range(n):
            x = _inverted_residual(x, t, c, s if r == 0 else 1, f"block{b}_{r}")
    x = _conv_bn(x, 256, 1, 1, "head")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    out = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="shoplens_product_cnn")


class KioskMix(keras.utils.PyDataset):
    """Batches of Fashion-MNIST images, a share of them rendered as kiosk scenes."""

    def __init__(self, images, labels, batch_size, kiosk_share, seed, shuffle=True, **kw):
        super().__init__(**kw)
        self.images, self.labels = images, labels
        self.batch_size, self.kiosk_share, self.seed, self.shuffle = batch_size, kiosk_share, seed, shuffle
        self.epoch = 0
        self.order = np.arange(len(images))
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def on_epoch_end(self):
        if self.shuffle:
            self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.images))
        self.epoch += 1

    def __getitem__(self, idx):
        idxs = self.order[idx * self.batch_size : (idx + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch if self.shuffle else 0, idx])
        pre = Preprocessor(CONTRACT, input_order="BGR")
        x = np.empty((len(idxs), 96, 96, 3), np.float32)
        for j, i in enumerate(idxs):
            img = self.images[i]
            if self.shuffle and rng.random() < 0.5:
                img = img[:, ::-1]
            if rng.random() < self.kiosk_share:
                img = render_scene(np.ascontiguousarray(img), rng, size=(128, 128))
            pre(img, x[j])
        return x, self.labels[idxs].astype(np.int32)


def evaluate_clean(model, images, labels, batch=500):
    pre = Preprocessor(CONTRACT, input_order="BGR")
    correct = 0
    x = np.empty((batch, 96, 96, 3), np.float32)
    for s in range(0, len(images), batch):
        chunk = images[s : s + batch]
        for j, img in enumerate(chunk):
            pre(img, x[j])
        p = model.predict_on_batch(x[: len(chunk)])
        correct += int((np.argmax(p, 1) == labels[s : s + batch]).sum())
    return correct / len(images)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10, help="training epochs over the training split")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument(
        "--kiosk-share", type=float, default=0.4, help="share of each batch rendered as kiosk scenes"
    )
    ap.add_argument("--limit", type=int, default=0, help="train on the first N images only (smoke runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args(argv)
    if args.epochs < 1:
        ap.error("--epochs must be >= 1")

    keras.utils.set_random_seed(args.seed)
    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU ({gpus[0].name})" if gpus else f"CPU ({os.cpu_count()} cores)"
    print(f"training on {device}", flush=True)

    x_all, y_all = load_fashion_mnist("train")
    x_test, y_test = load_fashion_mnist("test")
    x_train, y_train = x_all[:58000], y_all[:58000]
    x_val, y_val = x_all[58000:], y_all[58000:]
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]

    train = KioskMix(x_train, y_train, args.batch_size, args.kiosk_share, args.seed, workers=2)
    val = KioskMix(x_val, y_val, 500, args.kiosk_share, args.seed + 1, shuffle=False)
    model = build_model(len(FASHION_MNIST_LABELS))
    steps = args.epochs * len(train)
    schedule = keras.optimizers.schedules.CosineDecay(
        args.lr, decay_steps=steps, alpha=0.01, warmup_target=None
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    history = []

    class Log(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, "wall_s": round(time.time() - t0, 1)}
            row.update({k: round(float(v), 5) for k, v in (logs or {}).items()})
            history.append(row)
            print(json.dumps(row), flush=True)

    t0 = time.time()
    model.fit(train, validation_data=val, epochs=args.epochs, callbacks=[Log()], verbose=2)
    wall = time.time() - t0

    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.out / "product_cnn.keras"
    tmp = args.out / ".product_cnn.tmp.keras"
    model.save(tmp)
    os.replace(tmp, model_path)
    (args.out / "labels.txt").write_text("\n".join(FASHION_MNIST_LABELS) + "\n")
    (args.out / "contract.json").write_text(CONTRACT.to_json() + "\n")

    test_acc = evaluate_clean(model, x_test, y_test)
    print(f"test top-1 (full 10k, clean): {test_acc:.4f}", flush=True)
    log = {
        "model": model_path.name,
        "params": int(model.count_params()),
        "device": device,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "kiosk_share": args.kiosk_share,
        "train_images": len(x_train),
        "wall_time_s": round(wall, 1),
        "test_top1": round(test_acc, 4),
        "history": history,
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    (args.out / "training_log.json").write_text(json.dumps(log, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
