"""The model zoo: every recipe on every common Keras Applications architecture (``make zoo``).

Each architecture is built by ``keras.applications`` with random weights (nothing is downloaded),
at the smallest input it accepts (32x32), 10 classes, and once more as a transfer-learning model
(``Sequential([backbone(include_top=False), GlobalAveragePooling2D(), Dense(10)])``). It is then
trained for three epochs on 4,096 real Fashion-MNIST images (BatchNorm statistics recalibrated on
real images), so that its scores mean something, saved as
a Keras 3 ``.keras`` file with the contract its family's ``preprocess_input`` implies, and handed to
the real converter (:func:`shoplens_convert.convert`) once per recipe. Every cell compares the
converted model with its Keras source on real Fashion-MNIST test images: top-1 agreement and
mean |score delta| (a random-weight model has no accuracy worth gating; agreement is the measure)
against the bound stated per recipe in :data:`BOUNDS`.

    python -m benchmarks.zoo                       # every cell; writes docs/model_zoo.md (hours)
    python -m benchmarks.zoo --arch MobileNet --recipe int8 --recipe edgetpu   # a few cells
    python -m benchmarks.zoo --resume              # skip models already measured (out/zoo/cells)
    python -m benchmarks.zoo --resume --redo prune-int8   # and measure one recipe of them again
    python -m benchmarks.zoo --render benchmarks/results/zoo-2026-12-02.json   # the page only

``--mini`` builds each family with its own Keras Applications builder at reduced depth and width
(same layer kinds, same graph patterns, a fraction of the cost); ``tests/test_model_zoo.py`` runs a
slice of those in CI. Each architecture runs in its own process (TensorFlow's memory stays bounded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import ROOT

RECIPES = (
    "float16",
    "dynamic",
    "int8",
    "int8-per-tensor",
    "qat-int8",
    "prune-int8",
    "pqat-int8",
    "auto",
    "edgetpu",
)
# top-1 agreement with the Keras source (fraction) and mean |score delta| each cell must meet.
# Post-training recipes only round; the fine-tuning ones (QAT, pruning) also train the model
# further (QAT one epoch, pruning to 50 % two epochs, on 2,048 images), so they may move further from
# the source; at 50 % sparsity the model is meant to change, and the bound only catches a broken
# pipeline (chance agreement is 0.10). Pruning quality is measured on the reference model with a
# full fine-tune in docs/benchmarks.md (Table 1).
BOUNDS: dict[str, tuple[float, float]] = {
    "float16": (0.99, 0.005),
    "dynamic": (0.95, 0.03),
    "int8": (0.93, 0.04),
    "int8-per-tensor": (0.90, 0.05),
    "auto": (0.93, 0.04),
    "edgetpu": (0.93, 0.04),
    "qat-int8": (0.85, 0.08),
    "prune-int8": (0.50, 0.20),
    "pqat-int8": (0.50, 0.20),
}
SIZE = 32
CLASSES = 10
DEFAULT_OUT = ROOT / "out" / "zoo"


# -- architectures and the contract each family's preprocess_input implies --------------------
def _contract(kind: str) -> dict[str, Any]:
    base = {"version": 1, "size": [SIZE, SIZE], "channels": 3, "interpolation": "linear", "crop": "center"}
    if kind == "tf":  # [-1, 1]
        return {**base, "color_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}
    if kind == "caffe":  # BGR, ImageNet mean subtracted, no scaling
        return {**base, "color_order": "BGR", "mean": [103.939, 116.779, 123.68], "std": [1.0] * 3}
    if kind == "torch":  # RGB, ImageNet mean and std
        return {
            **base,
            "color_order": "RGB",
            "mean": [123.675, 116.28, 103.53],
            "std": [58.395, 57.12, 57.375],
        }
    return {**base, "color_order": "RGB", "mean": [0.0] * 3, "std": [1.0] * 3}  # raw: the model normalizes


@dataclass(frozen=True)
class Arch:
    name: str
    contract: str  # tf | caffe | torch | raw
    build: Callable[[bool], Any]  # include_top -> Keras 3 model (random weights)
    kinds: str  # the layer kinds it brings, for the CI slice


def _app(name: str, **kw: Any) -> Callable[[bool], Any]:
    def build(top: bool) -> Any:
        import keras

        fn = getattr(keras.applications, name)
        extra = {"classes": CLASSES} if top else {}
        return fn(weights=None, input_shape=(SIZE, SIZE, 3), include_top=top, **kw, **extra)

    return build


def _mini(family: str) -> Callable[[bool], Any]:
    """The family's own Keras Applications builder at reduced depth and width."""

    def build(top: bool) -> Any:
        from keras.src.applications import convnext, densenet, efficientnet, mobilenet_v3, nasnet, resnet

        common = {"weights": None, "input_shape": (SIZE, SIZE, 3), "include_top": top}
        if top:
            common["classes"] = CLASSES
        if family == "MobileNetV3Small":
            import keras

            return keras.applications.MobileNetV3Small(alpha=0.75, **common)
        if family == "EfficientNetB0":
            blocks = [b for b in efficientnet.DEFAULT_BLOCKS_ARGS[:3]]
            return efficientnet.EfficientNet(
                0.25, 0.5, SIZE, blocks_args=blocks, name="efficientnet_mini", **common
            )
        if family == "ConvNeXtTiny":
            return convnext.ConvNeXt(
                [1, 1, 1, 1],
                [16, 32, 48, 64],
                drop_path_rate=0.1,
                default_size=SIZE,
                name="convnext_mini",
                **common,
            )
        if family == "DenseNet121":
            return densenet.DenseNet([1, 2, 2, 1], name="densenet_mini", **common)
        if family == "ResNet50V2":

            def stack(x: Any) -> Any:
                x = resnet.stack_residual_blocks_v2(x, 16, 2, name="conv2")  # 1 block would repeat a name
                return resnet.stack_residual_blocks_v2(x, 32, 2, stride1=1, name="conv3")

            return resnet.ResNet(stack, True, True, name="resnet_v2_mini", **common)
        if family == "NASNetMobile":
            kw = {k: v for k, v in common.items() if k != "input_shape"}
            return nasnet.NASNet(
                (SIZE, SIZE, 3),
                penultimate_filters=96,
                num_blocks=1,
                stem_block_filters=8,
                name="nasnet_mini",
                **kw,
            )
        if family == "MobileNet":
            import keras

            return keras.applications.MobileNet(alpha=0.5, **common)
        raise KeyError(family)
        del mobilenet_v3  # pragma: no cover

    return build


ARCHS = {
    a.name: a
    for a in (
        Arch("MobileNet", "tf", _app("MobileNet"), "ReLU(6), DepthwiseConv2D, Reshape head"),
        Arch("MobileNetV2", "tf", _app("MobileNetV2"), "inverted residual Add, ReLU(6)"),
        Arch(
            "MobileNetV3Small", "raw", _app("MobileNetV3Small"), "hard_silu, ops x+3 and x*1/6, SE Multiply"
        ),
        Arch("MobileNetV3Large", "raw", _app("MobileNetV3Large"), "hard_silu, ops, SE Multiply"),
        Arch("EfficientNetB0", "raw", _app("EfficientNetB0"), "silu, Rescaling + Normalization, SE Reshape"),
        Arch("EfficientNetV2B0", "raw", _app("EfficientNetV2B0"), "silu, per-channel Normalization"),
        Arch("ResNet50", "caffe", _app("ResNet50"), "BGR per-channel mean (fold), residual Add"),
        Arch("ResNet50V2", "tf", _app("ResNet50V2"), "pre-activation BatchNormalization"),
        Arch(
            "DenseNet121",
            "torch",
            _app("DenseNet121"),
            "BatchNormalization after Concatenate, AveragePooling2D",
        ),
        Arch("NASNetMobile", "tf", _app("NASNetMobile"), "SeparableConv2D, Cropping2D, Concatenate"),
        Arch(
            "ConvNeXtTiny", "raw", _app("ConvNeXtTiny"), "nested models, LayerNormalization, LayerScale, gelu"
        ),
    )
}
MINI = {
    name: Arch(name, a.contract, _mini(name), a.kinds)
    for name, a in ARCHS.items()
    if name
    in (
        "MobileNet",
        "MobileNetV3Small",
        "EfficientNetB0",
        "ConvNeXtTiny",
        "DenseNet121",
        "ResNet50V2",
        "NASNetMobile",
    )
}


# -- one source model ------------------------------------------------------------------------
def make_source(
    arch: Arch, transfer: bool, out: Path, *, images: int = 4096, epochs: int = 3, seed: int = 0
) -> Path:
    """Build, train on ``images`` real images, save ``model.keras`` with its contract.

    A model trained this briefly from random weights answers with low confidence, and near-ties
    flip under any rounding; three epochs and BatchNorm statistics recalibrated on real images
    give it scores whose agreement after conversion means something.
    """
    import keras
    import numpy as np

    from shoplens.contract import PreprocessContract
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
    from shoplens.preprocess import preprocess_batch

    path = out / "model.keras"
    if path.is_file():
        return path
    out.mkdir(parents=True, exist_ok=True)
    contract = _contract(arch.contract)
    keras.utils.set_random_seed(seed)
    if transfer:
        backbone = arch.build(False)
        model = keras.Sequential(
            [
                keras.Input((SIZE, SIZE, 3)),
                backbone,
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(CLASSES, activation="softmax", name="head"),
            ],
            name=f"{arch.name.lower()}_transfer",
        )
    else:
        model = arch.build(True)
    x, y = load_fashion_mnist("train")
    xs = preprocess_batch(x[:images], PreprocessContract.from_dict(contract))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(xs, y[:images], batch_size=32, epochs=epochs, verbose=0)
    recalibrate_batchnorm(model, xs[:512])
    tmp = out / ".model.keras.tmp.keras"
    model.save(tmp)
    (out / "contract.json").write_text(json.dumps(contract, indent=1) + "\n", encoding="utf-8")
    (out / "labels.txt").write_text("\n".join(FASHION_MNIST_LABELS) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    del np
    return path


def recalibrate_batchnorm(model: Any, x: Any) -> int:
    """Set every BatchNormalization's moving statistics to those of ``x`` (one pass, momentum 0).

    One epoch moves the moving averages (momentum 0.99) only a few percent from their initial
    0 and 1, so in inference mode a briefly trained model answers a near-constant output; with
    the statistics of real images it answers what it learned.
    """
    import keras

    layers = [ly for ly in model._flatten_layers(include_self=False, recursive=True)
              if isinstance(ly, keras.layers.BatchNormalization)]  # fmt: skip
    saved = [ly.momentum for ly in layers]
    for ly in layers:
        ly.momentum = 0.0
    model(x, training=True)
    for ly, mom in zip(layers, saved, strict=True):
        ly.momentum = mom
    return len(layers)


def cell_options(recipe: str, *, eval_n: int, train_n: int, calib_n: int, latency_runs: int) -> Any:
    from shoplens_convert.options import ConvertOptions

    common = {
        "calib_data": "fashion-mnist:train:2000",
        "calib_count": calib_n,
        "eval_data": f"fashion-mnist:test:{eval_n}",
        "latency_runs": latency_runs,
    }
    train = {"train_data": f"fashion-mnist:train:{train_n}", "prune_epochs": 2, "qat_epochs": 1}
    if recipe in ("float16", "dynamic", "int8"):
        return ConvertOptions(recipe=recipe, **common)
    if recipe == "int8-per-tensor":
        return ConvertOptions(recipe="int8", per_tensor=True, **common)
    if recipe == "edgetpu":
        return ConvertOptions(recipe="int8", target="edgetpu", **common)
    if recipe == "auto":
        return ConvertOptions(recipe="auto", max_drop=2.0, **common)
    if recipe == "qat-int8":
        return ConvertOptions(recipe="qat-int8", **common, **train)
    if recipe == "prune-int8":
        return ConvertOptions(recipe="int8", prune=0.5, **common, **train)
    if recipe == "pqat-int8":
        return ConvertOptions(recipe="pqat-int8", prune=0.5, **common, **train)
    raise KeyError(recipe)


def run_cell(
    model_path: Path,
    recipe: str,
    *,
    eval_n: int = 500,
    train_n: int = 2048,
    calib_n: int = 200,
    latency_runs: int = 100,
) -> dict[str, Any]:
    """Convert ``model_path`` with one recipe; the row of the matrix (``converts`` False on error)."""
    from shoplens.errors import ShopLensError
    from shoplens_convert.pipeline import convert

    row: dict[str, Any] = {
        "recipe": recipe,
        "bound_agreement": BOUNDS[recipe][0],
        "bound_abs_delta": BOUNDS[recipe][1],
    }
    t0 = time.perf_counter()
    try:
        opts = cell_options(
            recipe, eval_n=eval_n, train_n=train_n, calib_n=calib_n, latency_runs=latency_runs
        )
        r = convert(model_path, opts).report
    except ShopLensError as exc:
        return {**row, "converts": False, "error": exc.message, "seconds": round(time.perf_counter() - t0, 1)}
    acc = r["accuracy"] or {}
    row.update(
        converts=True,
        chosen=r["recipe"]["chosen"],
        bytes=r["sizes"]["model_bytes"],
        ratio_to_float32=r["sizes"]["ratio_to_float32"],
        agreement=acc.get("agreement"),
        abs_score_delta_mean=acc.get("abs_score_delta_mean"),
        source_top1=acc.get("source_top1"),
        converted_top1=acc.get("converted_top1"),
        invoke_ms=(r.get("latency") or {}).get("invoke_p50"),
        seconds=round(time.perf_counter() - t0, 1),
        bridge=(r.get("bridge") or {}).get("used", False),
        bridge_max_difference=(r.get("bridge") or {}).get("max_output_difference"),
        input_preprocessing=(r.get("input_preprocessing") or {}).get("handling"),
        qat_fallback_layers=len((r.get("qat") or {}).get("fallback_configs") or {}),
        prunable_share=(r.get("prune") or {}).get("prunable_weight_share"),
        batchnorm_recalibrated=(r.get("prune") or {}).get("batchnorm_recalibrated"),
    )
    if "edgetpu" in r:
        pf = r["edgetpu"]["preflight"]
        row["edgetpu_ops_share"] = pf.get("op_share")
        row["edgetpu_macs_share"] = pf.get("mac_share")
        row["edgetpu_summary"] = pf.get("summary")
    row["meets_bound"] = meets_bound(row)
    return row


def run_model(arch: Arch, transfer: bool, recipes: list[str], cache: Path, **cell_kw: Any) -> dict[str, Any]:
    """Every recipe on one source model; the source's own facts and the rows."""
    label = f"{arch.name}{' (transfer)' if transfer else ''}"
    t0 = time.perf_counter()
    path = make_source(arch, transfer, cache / f"{arch.name}{'_tl' if transfer else ''}")
    import keras

    params = int(keras.saving.load_model(path, compile=False).count_params())
    out = {
        "model": label,
        "arch": arch.name,
        "transfer": transfer,
        "contract": arch.contract,
        "params": params,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "cells": [],
    }
    for recipe in recipes:
        row = run_cell(path, recipe, **cell_kw)
        out["cells"].append(row)
        print(
            json.dumps(
                {
                    "model": label,
                    **{k: row.get(k) for k in ("recipe", "converts", "agreement", "seconds", "error")},
                }
            ),
            flush=True,
        )
    return out


# -- the page -----------------------------------------------------------------------------------
def meets_bound(c: dict[str, Any]) -> bool:
    """A cell converts and agrees with its source within its recipe's :data:`BOUNDS`."""
    agreement, delta = c.get("agreement"), c.get("abs_score_delta_mean")
    if not c.get("converts") or agreement is None or delta is None:
        return False
    return bool(agreement >= BOUNDS[c["recipe"]][0] and delta <= BOUNDS[c["recipe"]][1])


def _cell_text(c: dict[str, Any]) -> str:
    if not c.get("converts"):
        return f"**fails**: {c.get('error', '')[:80]}"
    parts = [
        f"{c['ratio_to_float32']:.2f}x",
        f"agr {100 * c['agreement']:.1f} %",
        f"Δ {c['abs_score_delta_mean']:.3f}",
        f"{c['invoke_ms']:.2f} ms",
        f"{c['seconds']:.0f} s",
    ]
    if c["recipe"] == "edgetpu" and c.get("edgetpu_ops_share") is not None:
        parts.insert(
            1, f"TPU {100 * c['edgetpu_ops_share']:.0f} % ops / {100 * c['edgetpu_macs_share']:.0f} % MACs"
        )
    mark = "" if meets_bound(c) else " ⚠"
    if _stale_batchnorm(c):
        mark += " †"
    return ", ".join(parts) + mark


def _stale_batchnorm(c: dict[str, Any]) -> bool:
    """A pruning cell measured before the converter re-measured BatchNorm statistics after pruning."""
    return c["recipe"] in ("prune-int8", "pqat-int8") and bool(c.get("converts")) and (
        "batchnorm_recalibrated" not in c
    )


def render_page(results: dict[str, Any]) -> str:
    order = list(ARCHS)  # the page lists families in one order, whatever order they ran in
    rows = sorted(results["models"], key=lambda m: (order.index(m["arch"]) if m["arch"] in order else 99,
                                                    m["transfer"]))  # fmt: skip
    recipes = [r for r in RECIPES if any(c["recipe"] == r for m in rows for c in m["cells"])]
    total = sum(len(m["cells"]) for m in rows)
    ok = sum(c.get("converts", False) for m in rows for c in m["cells"])
    met = sum(meets_bound(c) for m in rows for c in m["cells"])
    lines = [
        "# Model zoo: every recipe on every common Keras Applications architecture",
        "",
        f"Generated by `python -m benchmarks.zoo` ({results['date']}, {results['machine']}); do not edit by "
        "hand. `make zoo` runs every cell; `tests/test_model_zoo.py` runs a slice of reduced-size builds of "
        "the same families in CI.",
        "",
        f"**{ok} of {total} cells convert; {met} meet their agreement bound.**",
        "",
        "How a cell is made: the architecture is built by `keras.applications` with random weights at "
        f"{SIZE}x{SIZE}x3 (the smallest input these builders accept), 10 classes, and again as a "
        "transfer-learning model `Sequential([backbone(include_top=False), GlobalAveragePooling2D(), "
        "Dense(10)])`; it is trained for three epochs on 4,096 Fashion-MNIST images (BatchNorm statistics "
        "recalibrated on real images) and saved as a Keras 3 "
        "`.keras` file with the contract of its family's `preprocess_input` (`tf`: [-1, 1]; `caffe`: BGR "
        "minus the ImageNet mean; `torch`: ImageNet mean and std; `raw`: pixels, the model normalizes "
        "itself). Then `shoplens convert` runs once per recipe: calibration on 200 training images, "
        "fine-tuning (QAT one epoch, pruning to 50 % two epochs) on 2,048, agreement and mean |score "
        "delta| against the "
        "Keras source on 500 test images, invoke p50 at 1 thread.",
        "",
        "Each cell: bytes as a share of float32, top-1 agreement with the Keras source, mean |score "
        "delta|, invoke ms (1 thread), convert seconds; for `edgetpu` the share of ops and MACs the "
        "pre-flight maps to the Edge TPU. ⚠ marks a cell outside its bound.",
        "",
        *(
            [
                "† measured by an earlier converter that did not re-measure BatchNorm statistics after "
                "pruning (their moving averages then still describe the dense model; pruned models "
                "answered far from their source). `make zoo ZOO_ARGS='--redo prune-int8 --redo "
                "pqat-int8'` measures these cells again.",
                "",
            ]
            if any(_stale_batchnorm(c) for m in rows for c in m["cells"])
            else []
        ),
        "| recipe | float16 | dynamic | int8 | int8 per-tensor | qat-int8 | prune 50 % + int8 | "
        "pqat-int8 | auto | edgetpu |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| agreement / mean Δ bound | "
        + " | ".join(f">= {100 * BOUNDS[r][0]:.0f} % / <= {BOUNDS[r][1]}" for r in RECIPES)
        + " |",
        "",
        "| model | params | contract | " + " | ".join(recipes) + " |",
        "| --- | ---: | --- | " + " | ".join("---" for _ in recipes) + " |",
    ]
    for m in rows:
        cells = {c["recipe"]: c for c in m["cells"]}
        lines.append(
            f"| {m['model']} | {m['params'] / 1e6:.2f} M | {m['contract']} | "
            + " | ".join(_cell_text(cells[r]) if r in cells else "-" for r in recipes)
            + " |"
        )
    lines += [
        "",
        "## What the converter did to each model",
        "",
        "| model | bridged | input preprocessing | QAT layers outside TFMOT's scheme | prunable weights |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for m in rows:
        cells = {c["recipe"]: c for c in m["cells"]}
        q = cells.get("qat-int8", {})
        p = cells.get("prune-int8", {})
        share = p.get("prunable_share")
        lines.append(
            f"| {m['model']} | {'yes' if q.get('bridge') else '-'} | "
            f"{q.get('input_preprocessing') or 'none'} | "
            f"{q.get('qat_fallback_layers', '-')} | {'-' if share is None else f'{100 * share:.0f} %'} |"
        )
    done = "" if results.get("complete", True) else " (incomplete: the run stopped before every model)"
    lines += ["", f"Total: {results['seconds'] / 60:.0f} min on {results['machine']}{done}.", ""]
    if results.get("pending"):
        lines += [f"Not measured yet: {', '.join(results['pending'])} (`make zoo` resumes).", ""]
    return "\n".join(lines)


# -- the driver ---------------------------------------------------------------------------------
def _worker(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    table = MINI if args.mini else ARCHS
    arch = table[args.worker]
    res = run_model(arch, args.transfer, args.recipe or list(RECIPES), Path(args.cache), eval_n=args.eval_n)
    res.update(mini=args.mini, eval_n=args.eval_n)
    tmp = Path(args.result + ".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, args.result)
    return 0


def _merge(path: Path, kept: dict[str, Any], new: dict[str, Any], recipes: list[str]) -> None:
    """Replace ``kept``'s cells by the re-measured ones (``--redo``), in recipe order, atomically."""
    cells = {c["recipe"]: c for c in kept["cells"]} | {c["recipe"]: c for c in new["cells"]}
    kept["cells"] = [cells[r] for r in recipes if r in cells]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(kept, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _reusable(path: Path, mini: bool, eval_n: int, recipes: list[str]) -> dict[str, Any] | None:
    """A model's earlier result, if it was measured the same way (``--resume``)."""
    try:
        res: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    cells = res.get("cells", [])
    done = {c["recipe"] for c in cells if not str(c.get("error", "")).startswith("worker exit")}
    same = res.get("mini") == mini and res.get("eval_n") == eval_n and set(recipes) <= done
    return res if same else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.zoo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", action="append", help="architecture (repeatable; default: all)")
    ap.add_argument("--recipe", action="append", choices=RECIPES, help="recipe (repeatable; default: all)")
    ap.add_argument("--no-transfer", action="store_true", help="skip the transfer-learning wrappers")
    ap.add_argument("--mini", action="store_true", help="reduced-size builds of each family (CI slice)")
    ap.add_argument("--eval-n", type=int, default=500, help="test images per cell")
    ap.add_argument("--cache", default=None, help="trained source models (default out/zoo/models[-mini])")
    ap.add_argument("--resume", action="store_true", help="keep models already measured the same way")
    ap.add_argument(
        "--redo", action="append", choices=RECIPES, help="with --resume: measure it again (repeatable)"
    )
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/zoo-DATE.json)")
    ap.add_argument("--page", default=str(ROOT / "docs" / "model_zoo.md"), help="Markdown page to write")
    ap.add_argument("--render", default=None, help="only render the page from this results JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--transfer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args)
    if args.render:
        Path(args.page).write_text(render_page(json.loads(Path(args.render).read_text())), encoding="utf-8")
        return 0
    from rich.progress import Progress

    table = MINI if args.mini else ARCHS
    suffix = "-mini" if args.mini else ""  # mini and stock builds never share a cache
    args.cache = args.cache or str(DEFAULT_OUT / f"models{suffix}")
    names = args.arch or list(table)
    jobs = [(n, tl) for n in names for tl in ((False,) if args.no_transfer else (False, True))]
    date = time.strftime("%Y-%m-%d")
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"zoo-{date}{'-mini' if args.mini else ''}.json")
    results: dict[str, Any] = {"date": date, "machine": f"{os.cpu_count()} cores", "models": []}
    work = DEFAULT_OUT / f"cells{suffix}"
    work.mkdir(parents=True, exist_ok=True)
    with Progress() as bar:
        task = bar.add_task("model zoo", total=len(jobs))
        for name, tl in jobs:
            res = work / f"{name}{'_tl' if tl else ''}.json"
            recipes = args.recipe or list(RECIPES)
            kept = _reusable(res, args.mini, args.eval_n, recipes) if args.resume else None
            if kept is None:
                res.unlink(missing_ok=True)  # never read a stale result as this run's
            redo = [r for r in args.redo or [] if r in recipes] if kept is not None else []
            target = res if kept is None else work / f"{res.stem}.redo.json"
            target.unlink(missing_ok=True)
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.zoo",
                "--worker",
                name,
                "--result",
                str(target),
                "--cache",
                args.cache,
                "--eval-n",
                str(args.eval_n),
            ]
            cmd += ["--transfer"] if tl else []
            cmd += ["--mini"] if args.mini else []
            for r in redo if kept is not None else args.recipe or []:
                cmd += ["--recipe", r]
            proc = subprocess.run(cmd, cwd=ROOT, check=False) if kept is None or redo else None
            if kept is not None and proc is not None:  # a kept model with some recipes measured again
                if proc.returncode == 0 and target.is_file():
                    _merge(res, kept, json.loads(target.read_text()), recipes)
                    target.unlink()
                proc = None  # a failed re-measure keeps the earlier cells
            if proc is not None and (proc.returncode != 0 or not res.is_file()):
                results["models"].append(
                    {
                        "model": name + (" (transfer)" if tl else ""),
                        "arch": name,
                        "transfer": tl,
                        "contract": table[name].contract,
                        "params": 0,
                        "cells": [
                            {"recipe": r, "converts": False, "error": f"worker exit {proc.returncode}"}
                            for r in args.recipe or RECIPES
                        ],
                    }
                )
            else:
                results["models"].append(json.loads(res.read_text()))
            bar.advance(task)
            # written after every model, so a long run that stops early keeps what it measured
            results["seconds"] = round(  # the measuring time of every model, kept ones included
                sum(m.get("train_seconds", 0) + sum(c.get("seconds", 0) for c in m["cells"])
                    for m in results["models"]), 1)  # fmt: skip
            results["complete"] = len(results["models"]) == len(jobs)
            rest = jobs[len(results["models"]) :]
            results["pending"] = [f"{n}{' (transfer)' if t else ''}" for n, t in rest]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
            Path(args.page).write_text(render_page(results), encoding="utf-8")
    print(f"wrote {out} and {args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
