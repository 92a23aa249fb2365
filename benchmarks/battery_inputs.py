"""The bad-input battery's inputs: a scratch workspace of good ones, and bad variants of each kind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks import REF, ROOT

__all__ = ["EXE", "WORK", "bad_files", "option_cases", "shoplens", "workspace"]

EXE = str(Path(sys.executable).parent / "shoplens")
WORK = ROOT / "out" / "battery"


def shoplens(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, cwd=cwd or WORK, timeout=900)


def workspace() -> dict[str, Path]:
    """The good inputs every bad one is made from (built once, reused)."""
    ws = {
        "model": WORK / "ref" / "model.tflite",
        "emb": WORK / "ref" / "embedding.tflite",
        "catalog": WORK / "catalog",
        "index": WORK / "index",
        "bundle": WORK / "bundle",
        "kiosk": WORK / "kiosk",
        "keras": WORK / "keras" / "product_cnn.keras",
    }
    WORK.mkdir(parents=True, exist_ok=True)
    if not ws["model"].is_file():
        r = shoplens(
            "convert",
            str(REF / "product_cnn.keras"),
            "--out",
            str(WORK / "ref"),
            "--recipe",
            "int8",
            "--calib-data",
            "fashion-mnist:train:100",
            "--embedding",
            "auto",
            "--quiet",
        )
        assert r.returncode == 0, r.stderr
    if not ws["keras"].is_file():
        ws["keras"].parent.mkdir(parents=True, exist_ok=True)
        for f in ("product_cnn.keras", "contract.json", "labels.txt"):
            shutil.copyfile(REF / f, ws["keras"].parent / f)
    if not ws["catalog"].is_dir():
        assert shoplens("data", "catalog", "--out", str(ws["catalog"]), "--count", "80").returncode == 0
    if not ws["index"].is_dir():
        r = shoplens(
            "index",
            "build",
            str(ws["catalog"] / "products.csv"),
            "--model",
            str(ws["emb"]),
            "--out",
            str(ws["index"]),
        )
        assert r.returncode == 0, r.stderr
    if not ws["bundle"].is_dir():
        r = shoplens("bundle", str(ws["model"]), "--out", str(ws["bundle"]), "--frames", "8")
        assert r.returncode == 0, r.stderr
    if not ws["kiosk"].is_dir():
        assert shoplens("data", "kiosk", "--out", str(ws["kiosk"]), "--frames", "20").returncode == 0
    return ws


def bad_files(ws: dict[str, Path], quick: bool) -> dict[str, dict[str, Path]]:
    """Bad variants of each kind of input: kind -> variant -> path."""
    bad = WORK / "bad"
    if bad.exists():
        shutil.rmtree(bad)
    bad.mkdir()
    model = ws["model"].read_bytes()
    img = next((ws["catalog"] / "images").iterdir()).read_bytes()

    def put(name: str, data: bytes | str) -> Path:
        p = bad / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return p

    flipped = bytearray(model)
    for i in range(64, len(flipped), max(1, len(flipped) // 40)):
        flipped[i] ^= 0xFF
    models = {
        "missing": bad / "nope.tflite",
        "empty": put("empty.tflite", b""),
        "truncated_half": put("half.tflite", model[: len(model) // 2]),
        "truncated_header": put("head.tflite", model[:16]),
        "bit_flipped": put("flipped.tflite", bytes(flipped)),
        "text": put("text.tflite", "this is not a model\n"),
        "png_as_model": put("image.tflite", img),
        "directory": bad / "adir.tflite",
        "two_outputs": put("two_outputs.tflite", _two_output_model()),
    }
    (bad / "adir.tflite").mkdir()
    images = {
        "missing": bad / "nope.png",
        "empty": put("empty.png", b""),
        "truncated": put("trunc.png", img[: len(img) // 3]),
        "text": put("text.png", "not an image"),
        "model_as_image": put("model.png", model[:4096]),
        "directory": bad / "imgdir",
    }
    (bad / "imgdir").mkdir()
    folders = {"missing": bad / "nofolder", "empty": bad / "emptyfolder", "only_corrupt": bad / "corrupt"}
    folders["empty"].mkdir()
    folders["only_corrupt"].mkdir()
    for i in range(3):
        put(f"corrupt/x/{i}.png", b"\x89PNG broken")
    # a folder that is not one of the model's labels; a folder of two classes (a subset: fine to
    # evaluate, not to fine-tune on); one 1x1 image among good ones (skipped, counted and named)
    folders |= {"unknown_class": bad / "unknown", "two_classes": bad / "two", "tiny_among_good": bad / "tiny"}
    for name, cls in (("unknown", "Spaceship"), ("two", "Bag"), ("two", "Coat"), ("tiny", "Bag")):
        for i, f in enumerate(sorted((ws["catalog"] / "images").iterdir())[:4]):
            put(f"{name}/{cls}/{i}{f.suffix}", f.read_bytes())
    put("tiny/Bag/tiny.png", _png_1x1())
    csv_head = (ws["catalog"] / "products.csv").read_text().splitlines()
    good_rows = csv_head[1:]
    csvs = {
        "missing": bad / "nope.csv",
        "empty": put("empty.csv", ""),
        "header_only": put("header.csv", csv_head[0] + "\n"),
        "bad_price": put(
            "catalog_bp/products.csv",
            "\n".join(
                [csv_head[0], *good_rows[:5], good_rows[5].replace(good_rows[5].split(",")[3], "cheap", 1)]
            )
            + "\n",
        ),
        "duplicate_ids": put(
            "catalog_dup/products.csv", "\n".join([csv_head[0], *good_rows[:5], good_rows[0]]) + "\n"
        ),
        "missing_images": put("catalog_mi/products.csv", "\n".join([csv_head[0], *good_rows[:5]]) + "\n"),
        "binary": put("binary.csv", model[:2048]),
    }
    for name in ("catalog_bp", "catalog_dup"):
        shutil.copytree(ws["catalog"] / "images", bad / name / "images")
    indexes = {"missing": bad / "noindex", "empty": bad / "emptyindex", "not_index": ws["catalog"]}
    indexes["empty"].mkdir()
    for what in ("no_manifest", "truncated_codes", "manifest_garbage", "manifest_other_model"):
        d = bad / f"index_{what}"
        shutil.copytree(ws["index"], d)
        indexes[what] = d
    (indexes["no_manifest"] / "manifest.json").unlink()
    codes = indexes["truncated_codes"] / "codes.bin"
    codes.write_bytes(codes.read_bytes()[: codes.stat().st_size // 2])
    (indexes["manifest_garbage"] / "manifest.json").write_text("{not json")
    m = json.loads((indexes["manifest_other_model"] / "manifest.json").read_text())
    m["model_sha256"] = "0" * 64
    (indexes["manifest_other_model"] / "manifest.json").write_text(json.dumps(m))
    labels = {
        "wrong_count": put("labels3.txt", "a\nb\nc\n"),
        "empty": put("labels0.txt", ""),
        "missing": bad / "nolabels.txt",
    }
    contracts = {
        "garbage": put("contract_bad.json", "{"),
        "wrong_size": put("contract_size.json", json.dumps({"version": 1, "size": [-5, 0], "channels": 3})),
        "missing": bad / "nocontract.json",
        "wrong_values": put(
            "contract_vals.json",
            json.dumps({"version": 1, "size": [96, 96], "channels": 3, "mean": [0, 0], "std": [0, 1, 1]}),
        ),
    }
    outputs = {
        "missing": bad / "nodev.json",
        "garbage": put("dev_bad.json", "[1,2"),
        "empty": put("dev_empty.json", "{}"),
        "wrong_shape": put("dev_shape.json", json.dumps({"x": [1.0]})),
        "csv_garbage": put("dev_bad.csv", "id,a\n1,b\n"),
    }
    specs = {
        "unknown_scheme": "nosuch:thing",
        "bad_split": "fashion-mnist:validation",
        "bad_count": "fashion-mnist:test:-3",
        "zero": "fashion-mnist:test:0",
        "kiosk_missing": "kiosk:" + str(bad / "nokiosk"),
        "empty_dir": str(bad / "emptyfolder"),
        "corrupt_dir": str(bad / "corrupt"),
    }
    out = {
        "model": models,
        "image": images,
        "folder": folders,
        "csv": csvs,
        "index": indexes,
        "labels": labels,
        "contract": contracts,
        "outputs": outputs,
        "spec": {k: Path(v) for k, v in specs.items()},
    }
    if quick:
        out = {k: dict(list(v.items())[:2]) for k, v in out.items()}
    return out


def _two_output_model() -> bytes:
    """A real TFLite model with two outputs (scores and a 4-vector): not a classifier."""
    import tensorflow as tf

    i = tf.keras.Input((28, 28, 1))
    x = tf.keras.layers.Flatten()(i)
    m = tf.keras.Model(i, [tf.keras.layers.Dense(10, activation="softmax")(x), tf.keras.layers.Dense(4)(x)])
    return bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())


def _png_1x1() -> bytes:
    import cv2
    import numpy as np

    return bytes(cv2.imencode(".png", np.zeros((1, 1), np.uint8))[1].tobytes())


def option_cases(
    ws: dict[str, Path], bad: dict[str, dict[str, Path]], img: Path, o: Path
) -> list[tuple[str, list[str]]]:
    """Option values out of range, paths where outputs cannot go, outputs over inputs: (name, args)."""
    index_build = ["index", "build", str(ws["catalog"] / "products.csv"), "--model", str(ws["emb"])]
    classify_img = ["classify", str(ws["model"]), str(img)]
    prune = ["convert", str(ws["keras"]), "--prune", "0.5", "--calib-data", "fashion-mnist:train:20"]
    two = bad["folder"].get("two_classes", WORK / "bad" / "two")
    opts = [
        ("classify --top-k 0", ["classify", str(ws["model"]), str(img), "--top-k", "0"]),
        ("classify --threads 0", ["classify", str(ws["model"]), str(img), "--threads", "0"]),
        ("classify --quality maybe", ["classify", str(ws["model"]), str(img), "--quality", "maybe"]),
        ("classify --delegate gpu", ["classify", str(ws["model"]), str(img), "--delegate", "gpu"]),
        (
            "classify --white-balance w/o colour",
            ["classify", str(ws["model"]), str(img), "--white-balance", "auto"],
        ),
        (
            "classify --colour --white-balance x",
            ["classify", str(ws["model"]), str(img), "--colour", "--white-balance", "1,2"],
        ),
        ("search --k 0", ["search", str(ws["index"]), str(img), "--k", "0"]),
        ("search --k -1", ["search", str(ws["index"]), str(img), "--k", "-1"]),
        ("search --category unknown", ["search", str(ws["index"]), str(img), "--category", "Spaceship"]),
        ("search --colour mauve", ["search", str(ws["index"]), str(img), "--colour", "mauve"]),
        ("search --where bad", ["search", str(ws["index"]), str(img), "--where", "brand"]),
        ("search --where unknown column", ["search", str(ws["index"]), str(img), "--where", "size=M"]),
        (
            "search --min-price > --max-price",
            ["search", str(ws["index"]), str(img), "--min-price", "50", "--max-price", "10"],
        ),
        ("bundle --frames 0", ["bundle", str(ws["model"]), "--out", str(o / "bf0"), "--frames", "0"]),
        (
            "bundle --frames 100000",
            ["bundle", str(ws["model"]), "--out", str(o / "bf1"), "--frames", "100000"],
        ),
        (
            "bundle --sign-key missing",
            ["bundle", str(ws["model"]), "--out", str(o / "bsk"), "--sign-key", str(WORK / "nokey.pem")],
        ),
        ("bundle --out /proc/x", ["bundle", str(ws["model"]), "--out", "/proc/x"]),
        (
            "index build --out /proc/x",
            [
                *index_build,
                "--out",
                "/proc/x",
            ],
        ),
        ("data catalog --out /proc/x", ["data", "catalog", "--out", "/proc/x", "--count", "3"]),
        ("data catalog --count 0", ["data", "catalog", "--out", str(o / "dc0"), "--count", "0"]),
        ("data kiosk --frames 0", ["data", "kiosk", "--out", str(o / "dk0"), "--frames", "0"]),
        ("convert --recipe nope", ["convert", str(ws["keras"]), "--recipe", "nope", "--out", str(o / "cr")]),
        ("convert --prune 1.5", ["convert", str(ws["keras"]), "--prune", "1.5", "--out", str(o / "cp")]),
        (
            "convert --prune-channels 0",
            [
                "convert",
                str(ws["keras"]),
                "--prune-channels",
                "0",
                "--train-data",
                "fashion-mnist:train:10",
                "--out",
                str(o / "cpc"),
            ],
        ),
        (
            "convert --prune without data",
            ["convert", str(ws["keras"]), "--prune", "0.5", "--out", str(o / "cpd")],
        ),
        ("convert --target tpu", ["convert", str(ws["keras"]), "--target", "tpu", "--out", str(o / "ctt")]),
        ("convert --max-drop -1", ["convert", str(ws["keras"]), "--max-drop", "-1", "--out", str(o / "cmd")]),
        (
            "convert --out = the model's folder",
            ["convert", str(ws["keras"]), "--out", str(ws["keras"].parent), "--overwrite"],
        ),
        (
            "eval --save over the model",
            [
                "eval",
                str(ws["keras"]),
                "--data",
                "fashion-mnist:test:10",
                "--save",
                str(ws["keras"]),
                "--overwrite",
            ],
        ),
        (
            "index build --out its catalog",
            [
                *index_build,
                "--out",
                str(ws["catalog"]),
                "--overwrite",
            ],
        ),
        (
            "bundle --out the model's folder",
            ["bundle", str(ws["model"]), "--out", str(ws["model"].parent), "--overwrite"],
        ),
        (
            "drift --save over the manifest",
            [
                "drift",
                "--bundle",
                str(ws["bundle"]),
                "--device-outputs",
                str(WORK / "dev.json"),
                "--save",
                str(ws["bundle"] / "manifest.json"),
                "--overwrite",
            ],
        ),
        (
            "drift --save X --html X",
            [
                "drift",
                str(ws["model"]),
                str(ws["model"]),
                "--data",
                "fashion-mnist:test:10",
                "--save",
                str(o / "same.out"),
                "--html",
                str(o / "same.out"),
            ],
        ),
        ("drift no candidate", ["drift", str(ws["model"]), "--data", "fashion-mnist:test:10"]),
        (
            "drift --max-drop -1",
            [
                "drift",
                str(ws["model"]),
                str(ws["model"]),
                "--data",
                "fashion-mnist:test:10",
                "--max-drop",
                "-1",
            ],
        ),
        ("edgetpu compile no compiler", ["edgetpu", "compile", str(ws["model"]), "--out", str(o / "etc")]),
        (
            "index add duplicate products",
            ["index", "add", str(WORK / "index_copy"), str(ws["catalog"] / "products.csv")],
        ),
        ("index remove unknown id", ["index", "remove", str(WORK / "index_copy"), "SL-nope"]),
        ("classify --camera 99", ["classify", str(ws["model"]), "--camera", "99"]),
        ("classify IMAGE --camera 0", ["classify", str(ws["model"]), str(img), "--camera", "0"]),
        ("classify --delegate edgetpu, no runtime", [*classify_img, "--delegate", "edgetpu"]),
        ("convert --prune, 2-class train data", [*prune, "--train-data", str(two), "--out", str(o / "cp2")]),
        ("unknown command", ["frobnicate"]),
        ("unknown option", ["classify", str(ws["model"]), str(img), "--frob"]),
    ]
    return opts
