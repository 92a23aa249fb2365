"""Shared fixtures: real Fashion-MNIST data and small real models trained in seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = ROOT / "sample_apps" / "reference_model"
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-hardware", action="store_true", help="run tests that need an Edge TPU or camera")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-hardware"):
        return
    skip = pytest.mark.skip(reason="needs real hardware; pass --run-hardware")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fmnist_test() -> tuple[np.ndarray, np.ndarray]:
    from shoplens.data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist("test")


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run the real ``shoplens`` console script in a subprocess."""
    exe = Path(sys.executable).parent / "shoplens"
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=full_env, cwd=cwd or ROOT, timeout=600
    )


def one_line_error(proc: subprocess.CompletedProcess, code: int, needle: str) -> None:
    """The CLI failed with ``code`` and one ``error: ...`` line containing ``needle``."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) <= 2  # the error, and for usage errors a "try --help" hint


@pytest.fixture(scope="session")
def tiny_keras_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Keras 3 CNN on 28x28 gray input, trained for a few seconds on 3,000 real images.

    Saved with its contract.json and labels.txt, as a team would hand it over.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from shoplens.contract import PreprocessContract
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
    from shoplens.preprocess import preprocess_batch

    out = tmp_path_factory.mktemp("tiny_model")
    contract = PreprocessContract.from_range(28, 28, 0.0, 1.0, channels=1)
    x, y = load_fashion_mnist("train")
    xs = preprocess_batch(x[:3000], contract)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xs, y[:3000], epochs=3, batch_size=64, verbose=0)
    path = out / "tiny.keras"
    model.save(path)
    (out / "contract.json").write_text(contract.to_json())
    (out / "labels.txt").write_text("\n".join(FASHION_MNIST_LABELS) + "\n")
    return path


def _train_tiny(out: Path, contract, *, logits: bool = False, n: int = 3000, epochs: int = 3) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
    from shoplens.preprocess import preprocess_batch

    x, y = load_fashion_mnist("train")
    xs = preprocess_batch(x[:n], contract)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((contract.height, contract.width, contract.channels)),
            keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation=None if logits else "softmax"),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
    model.compile("adam", loss, metrics=["accuracy"])
    model.fit(xs, y[:n], epochs=epochs, batch_size=64, verbose=0)
    path = out / "model.keras"
    model.save(path)
    (out / "contract.json").write_text(contract.to_json())
    (out / "labels.txt").write_text("\n".join(FASHION_MNIST_LABELS) + "\n")
    return path


def _to_tflite(keras_path: Path, contract, *, int8: bool, io: str = "uint8", calib: int = 200) -> bytes:
    """A real conversion through the converter's quantize stage."""
    from shoplens.data.spec import open_dataset
    from shoplens_convert.load import load_keras_model
    from shoplens_convert.quantize import calibration_frames, quantize

    model = load_keras_model(keras_path).model
    if not int8:
        return quantize(model, "float32")
    cal = calibration_frames(open_dataset(f"fashion-mnist:train:{calib}"), contract, calib)
    return quantize(model, "int8", calibration=cal, io_type=io)


@pytest.fixture(scope="session")
def tiny_rgb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 32x32 RGB CNN trained in seconds, as Keras and as real TFLite files.

    Keys: keras, f32 (float I/O), int8 (uint8 I/O), int8io (int8 I/O), logits (int8, logits
    output), nometa (int8 without ShopLens metadata, no labels.txt beside it).
    """
    from shoplens.contract import PreprocessContract
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS
    from shoplens_convert.metadata import embed_shoplens_metadata, shoplens_metadata_dict

    out = tmp_path_factory.mktemp("tiny_rgb")
    contract = PreprocessContract.from_range(32, 32, 0.0, 1.0, color_order="RGB")
    keras_path = _train_tiny(out, contract)
    paths = {"keras": keras_path}
    meta = shoplens_metadata_dict(contract, FASHION_MNIST_LABELS)
    for name, kw in {
        "f32": {"int8": False},
        "int8": {"int8": True},
        "int8io": {"int8": True, "io": "int8"},
    }.items():
        p = out / f"{name}.tflite"
        p.write_bytes(embed_shoplens_metadata(_to_tflite(keras_path, contract, **kw), meta))
        paths[name] = p
    bare = tmp_path_factory.mktemp("bare") / "nometa.tflite"
    bare.write_bytes(_to_tflite(keras_path, contract, int8=True))
    paths["nometa"] = bare
    lout = tmp_path_factory.mktemp("tiny_logits")
    lk = _train_tiny(lout, contract, logits=True, epochs=2)
    lp = lout / "logits.tflite"
    lp.write_bytes(
        embed_shoplens_metadata(_to_tflite(lk, contract, int8=False), {**meta, "output": "logits"})
    )
    paths["logits"] = lp
    return paths


@pytest.fixture(scope="session")
def per_channel_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32x32 RGB CNN trained with per-channel mean/std (which standard metadata cannot carry)."""
    from shoplens.contract import PreprocessContract

    contract = PreprocessContract(
        32, 32, mean=(120.0, 115.0, 110.0), std=(60.0, 62.0, 64.0), interpolation="linear"
    )
    return _train_tiny(tmp_path_factory.mktemp("per_channel"), contract, n=2000, epochs=2)


@pytest.fixture(scope="session")
def block_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small functional Keras 3 model with the reference model's layer kinds (BN, ReLU6,
    depthwise, residual Add, GAP), trained briefly, for the bridge, pruning and QAT."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from shoplens.contract import PreprocessContract
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
    from shoplens.preprocess import preprocess_batch

    out = tmp_path_factory.mktemp("block_model")
    contract = PreprocessContract.from_range(32, 32, -1.0, 1.0, interpolation="linear")
    x, y = load_fashion_mnist("train")
    xs = preprocess_batch(x[:3000], contract)
    keras.utils.set_random_seed(1)
    L = keras.layers
    inp = keras.Input((32, 32, 3), name="image")
    h = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    h = L.BatchNormalization(momentum=0.9, name="stem_bn")(h)
    h = L.ReLU(6.0, name="stem_relu")(h)
    r = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(h)
    r = L.BatchNormalization(momentum=0.9, name="dw_bn")(r)
    r = L.ReLU(6.0, name="dw_relu")(r)
    r = L.Conv2D(16, 1, use_bias=False, name="project")(r)
    r = L.BatchNormalization(momentum=0.9, name="project_bn")(r)
    h = L.Add(name="add")([h, r])
    h = L.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="head")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    out_t = L.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(inp, out_t, name="block_model")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(xs, y[:3000], epochs=5, batch_size=64, verbose=0)  # about 73 % top-1
    path = out / "block.keras"
    model.save(path)
    (out / "contract.json").write_text(contract.to_json())
    (out / "labels.txt").write_text("\n".join(FASHION_MNIST_LABELS) + "\n")
    return path


def colorize(gray: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Fashion-MNIST items in product colours: each class has its own hue band (BGR images).

    Real catalogues are in colour and models use it; on gray images a swapped channel order
    would go unnoticed, so the drift tests need a model for which colour matters.
    """
    import cv2

    rng = np.random.default_rng(seed)
    hue = (labels.astype(np.int64) * 18 + rng.integers(-4, 5, len(labels))) % 180
    hsv = np.empty((*gray.shape, 3), np.uint8)
    hsv[..., 0] = hue[:, None, None]
    hsv[..., 1] = 210
    hsv[..., 2] = gray
    return np.stack([cv2.cvtColor(h, cv2.COLOR_HSV2BGR) for h in hsv])


@pytest.fixture(scope="session")
def color_catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 32x32 RGB CNN trained on colourised Fashion-MNIST, converted for real to int8 and float32.

    Keys: keras, int8, f32 (both .tflite with ShopLens metadata), test (an image folder of 300
    colourised test images, one subfolder per class).
    """
    import cv2

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from shoplens.contract import PreprocessContract
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
    from shoplens.preprocess import preprocess_batch
    from shoplens_convert.metadata import embed_shoplens_metadata, shoplens_metadata_dict
    from shoplens_convert.quantize import quantize

    out = tmp_path_factory.mktemp("color_catalog")
    contract = PreprocessContract.from_range(32, 32, 0.0, 1.0, color_order="RGB")
    x, y = load_fashion_mnist("train")
    xs = preprocess_batch(colorize(x[:3000], y[:3000], 0), contract)  # BGR frames in, as from a camera
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xs, y[:3000], epochs=3, batch_size=64, verbose=0)
    paths = {"keras": out / "model.keras"}
    model.save(paths["keras"])
    (out / "contract.json").write_text(contract.to_json())
    (out / "labels.txt").write_text("\n".join(FASHION_MNIST_LABELS) + "\n")
    meta = shoplens_metadata_dict(contract, FASHION_MNIST_LABELS)
    for name, recipe in (("int8", "int8"), ("f32", "float32")):
        tfl = quantize(model, recipe, calibration=xs[:200] if recipe == "int8" else None)
        paths[name] = out / f"{name}.tflite"
        paths[name].write_bytes(embed_shoplens_metadata(tfl, meta))
    xt, yt = load_fashion_mnist("test")
    test = out / "test"
    for i, (img, lab) in enumerate(zip(colorize(xt[:300], yt[:300], 1), yt[:300], strict=True)):
        d = test / FASHION_MNIST_LABELS[lab].replace("/", "-")
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i:04d}.png"), img)
    (test / "labels.txt").write_text("\n".join(n.replace("/", "-") for n in FASHION_MNIST_LABELS) + "\n")
    paths["test"] = test
    return paths


ARTIFACTS = ROOT / "out" / "test-artifacts"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


@pytest.fixture(scope="session")
def browser():
    """A real headless Chromium (Debian's, installed by ``make setup``) driven by Playwright."""
    from playwright.sync_api import sync_playwright

    exe = next((p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), None)
    if exe is None:
        pytest.fail("no Chromium found; run 'make setup' (it installs Debian's chromium package)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def converted(tiny_rgb, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``shoplens convert --embedding auto`` on the small RGB model: model.tflite + embedding.tflite."""
    out = tmp_path_factory.mktemp("emb") / "out"
    p = run_cli("convert", str(tiny_rgb["keras"]), "--out", str(out),
                "--calib-data", "fashion-mnist:train:100",
                "--eval-data", "fashion-mnist:test:300", "--embedding", "auto", "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    e = rep["embedding"]
    assert e["file"] == "embedding.tflite" and e["quantization"] == "int8"
    assert e["drift"]["images"] == 300 and e["drift"]["cosine_mean"] >= 0.98, e["drift"]
    assert 0.5 <= e["drift"]["neighbour_overlap_at_10"] <= 1.0
    assert "## Embedding model" in (out / "report.md").read_text()
    return out
