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
    python -m benchmarks.zoo --resume              # skip models already measured (out/zoo/cells, else
                                                   # the newest benchmarks/results/zoo-DATE.json)
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
from pathlib import Path
from typing import Any

from benchmarks import ROOT
from benchmarks.zoo_archs import ARCHS, CLASSES, MINI, SIZE, Arch, contract_for
from shoplens.internal.atomic import atomic_write_text

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
DEFAULT_OUT = ROOT / "out" / "zoo"


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
    contract = contract_for(arch.contract)
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
        # the guard asks what the cell's bound asks: auto moves on (float fallback, dynamic) below it
        return ConvertOptions(recipe="auto", max_drop=2.0, min_agreement=round(100 * BOUNDS["auto"][0], 6),
                              **common)
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
        guard_min_agreement=acc.get("min_agreement_pct"),
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
        qat_targets=(r.get("qat") or {}).get("targets"),
        qat_teacher=(r.get("qat") or {}).get("teacher"),
        prunable_share=(r.get("prune") or {}).get("prunable_weight_share"),
        prune_targets=(r.get("prune") or {}).get("targets"),
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


# -- the bound ----------------------------------------------------------------------------------
def meets_bound(c: dict[str, Any]) -> bool:
    """A cell converts and agrees with its source within its recipe's :data:`BOUNDS`."""
    agreement, delta = c.get("agreement"), c.get("abs_score_delta_mean")
    if not c.get("converts") or agreement is None or delta is None:
        return False
    return bool(agreement >= BOUNDS[c["recipe"]][0] and delta <= BOUNDS[c["recipe"]][1])


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


def _assemble(
    matrix: list[tuple[str, bool]], measured: dict[tuple[str, bool], dict[str, Any]], work: Path | None,
    mini: bool, eval_n: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """The results' models in matrix order: this run's, then (``--resume``) those measured earlier
    the same way that this run did not touch, so a run of a few architectures keeps the rest."""
    out = []
    for name, tl in matrix:
        m = measured.get((name, tl))
        if m is None and work is not None:
            m = _reusable(work / f"{name}{'_tl' if tl else ''}.json", mini, eval_n, list(RECIPES))
        if m is not None:
            out.append(m)
    return out


def _seed_cells(work: Path, mini: bool) -> int:
    """On a fresh checkout ``out/`` is empty: seed the per-model results ``--resume`` reads from the
    newest committed results JSON, so a resumed run measures only what that file lacks."""
    pattern = "zoo-????-??-??-mini.json" if mini else "zoo-????-??-??.json"
    found = sorted((ROOT / "benchmarks" / "results").glob(pattern))
    if not found:
        return 0
    seeded = 0
    for m in json.loads(found[-1].read_text()).get("models", []):
        cell = work / f"{m['arch']}{'_tl' if m.get('transfer') else ''}.json"
        crashed = any(str(c.get("error", "")).startswith("worker exit") for c in m["cells"])
        if not cell.exists() and not crashed:
            atomic_write_text(cell, json.dumps(m, indent=1) + "\n")
            seeded += 1
    return seeded


def main(argv: list[str] | None = None) -> int:
    from benchmarks import zoo_page  # the page reads this module's tables
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
        page = zoo_page.render_page(json.loads(Path(args.render).read_text()))
        atomic_write_text(args.page, page, overwrite=True)
        return 0
    from rich.progress import Progress

    table = MINI if args.mini else ARCHS
    suffix = "-mini" if args.mini else ""  # mini and stock builds never share a cache
    args.cache = args.cache or str(DEFAULT_OUT / f"models{suffix}")
    names = args.arch or list(table)
    jobs = [(n, tl) for n in names for tl in ((False,) if args.no_transfer else (False, True))]
    # with --resume the page is the whole matrix: the models this run leaves alone keep their cells
    matrix = [(n, tl) for n in table for tl in (False, True)] if args.resume else jobs
    measured: dict[tuple[str, bool], dict[str, Any]] = {}
    kept_dir = DEFAULT_OUT / f"cells{suffix}" if args.resume else None
    date = time.strftime("%Y-%m-%d")
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"zoo-{date}{'-mini' if args.mini else ''}.json")
    results: dict[str, Any] = {"date": date, "machine": f"{os.cpu_count()} cores", "models": []}
    work = DEFAULT_OUT / f"cells{suffix}"
    work.mkdir(parents=True, exist_ok=True)
    if args.resume and (seeded := _seed_cells(work, args.mini)):
        print(f"resuming: {seeded} models measured earlier, from benchmarks/results")
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
                measured[(name, tl)] = (
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
                measured[(name, tl)] = json.loads(res.read_text())
            results["models"] = _assemble(matrix, measured, kept_dir, args.mini, args.eval_n)
            bar.advance(task)
            # written after every model, so a long run that stops early keeps what it measured
            results["seconds"] = round(  # the measuring time of every model, kept ones included
                sum(m.get("train_seconds", 0) + sum(c.get("seconds", 0) for c in m["cells"])
                    for m in results["models"]), 1)  # fmt: skip
            have = {(m["arch"], bool(m.get("transfer"))) for m in results["models"]}
            rest = [(n, t) for n, t in matrix if (n, t) not in have]
            results["complete"] = not rest
            results["pending"] = [f"{n}{' (transfer)' if t else ''}" for n, t in rest]
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out, json.dumps(results, indent=1) + "\n", overwrite=True)
            atomic_write_text(args.page, zoo_page.render_page(results), overwrite=True)
    print(f"wrote {out} and {args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
