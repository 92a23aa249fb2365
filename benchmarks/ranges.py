"""int8 activation ranges: TFLite's min/max against least squared error (``--ranges mse``), paired.

    .venv/bin/python -m benchmarks.ranges [--model DIR ...]   # default: the zoo's trained sources

For each source model (default: every ``out/zoo/models/*/model.keras`` that ``python -m
benchmarks.zoo`` trained), ``shoplens convert --recipe int8`` runs with each range choice on the
same 200, 500 and 1,000 calibration images; agreement with the Keras source and mean |score
delta| on 500 test images, measured as the zoo's cells measure them. Min/max ranges follow the
most extreme value the calibration images hold, so more images can make them worse; the paired
rows show whether the least-squares ranges do better on the same images. Writes
``benchmarks/results/ranges-DATE.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks import ROOT
from shoplens.internal.atomic import atomic_write_text

COUNTS = (200, 500, 1000)
METHODS = ("minmax", "mse")


def measure(model: Path, count: int, method: str, eval_n: int = 500) -> dict[str, Any]:
    from benchmarks.zoo import cell_options
    from shoplens_convert.pipeline import convert

    opts = cell_options("int8", eval_n=eval_n, train_n=0, calib_n=count, latency_runs=0)
    t0 = time.perf_counter()
    r = convert(model, dataclasses.replace(opts, ranges=method)).report
    acc = r["accuracy"]
    return {
        "model": model.parent.name,
        "calibration_images": count,
        "ranges": r["recipe"]["ranges"],
        "agreement": acc["agreement"],
        "abs_score_delta_mean": acc["abs_score_delta_mean"],
        "source_top1": acc["source_top1"],
        "converted_top1": acc["converted_top1"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    from rich.progress import Progress

    ap = argparse.ArgumentParser(prog="python -m benchmarks.ranges", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="a source's model.keras (repeatable)")
    ap.add_argument("--count", action="append", type=int, help=f"calibration images (default {COUNTS})")
    args = ap.parse_args(argv)
    found = sorted((ROOT / "out" / "zoo" / "models").glob("*/model.keras"))
    models = [Path(m) for m in args.model] if args.model else found
    if not models:
        raise SystemExit("no source models: run python -m benchmarks.zoo first (it trains them)")
    counts = args.count or list(COUNTS)
    date = time.strftime("%Y-%m-%d")
    out = ROOT / "benchmarks" / "results" / f"ranges-{date}.json"
    rows: list[dict[str, Any]] = []
    with Progress() as bar:
        task = bar.add_task("int8 ranges", total=len(models) * len(counts) * len(METHODS))
        for model in models:
            for count in counts:
                for method in METHODS:
                    rows.append(measure(model, count, method))
                    bar.advance(task)
                    doc = {"date": date, "machine": f"{os.cpu_count()} cores", "rows": rows}
                    atomic_write_text(out, json.dumps(doc, indent=1) + "\n", overwrite=True)
    for model in models:
        for count in counts:
            pair = {r["ranges"]: r for r in rows if r["model"] == model.parent.name
                    and r["calibration_images"] == count}  # fmt: skip
            print(f"{model.parent.name:24s} {count:5d} images: agreement min/max "
                  f"{100 * pair['minmax']['agreement']:.1f} %, mse {100 * pair['mse']['agreement']:.1f} %")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
