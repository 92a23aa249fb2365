"""The bad-input battery: every command against every kind of bad input, nothing lost (``make battery``).

    .venv/bin/python -m benchmarks.battery            # about 10 minutes on 2 cores
    .venv/bin/python -m benchmarks.battery --quick    # a few cases of each kind

Builds a scratch workspace (a converted model and its embedding model, a catalog, an index, a
bundle, a kiosk folder), then makes bad inputs of each kind (missing, empty, truncated, bit-flipped,
wrong type, labels of another count, malformed contract, corrupt or tiny images, CSVs with bad rows,
broken indexes, malformed device outputs) and bad option values, and runs every command that reads
that kind of input in a subprocess (the real ``shoplens`` console script). Each case is judged:

- **clean**: exit 1 or 2, the first stderr line ``error: ...``, at most two lines, no traceback;
- **accepted**: exit 0 (listed: a bad input the command may rightly skip, such as one corrupt image
  among good ones, or a wrong answer given silently; each is read by hand);
- **crash**: any other exit code, a traceback, or native noise on stderr;
- and, for every case, **input changed** (the sha256 of every input file before and after) and
  **left output** (a failed run that left its ``--out``/``--save`` path behind).

Writes ``benchmarks/results/battery-DATE.json``; docs/reliability.md reports the counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import ROOT
from benchmarks.battery_inputs import WORK, bad_files, option_cases, shoplens, workspace
from shoplens.internal.atomic import atomic_write_text


@dataclass
class Case:
    name: str
    args: list[str]
    inputs: list[Path]
    outputs: list[Path] = field(default_factory=list)


def _digest(paths: list[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def cases(ws: dict[str, Path], bad: dict[str, dict[str, Path]]) -> list[Case]:
    o = WORK / "outs"
    img = next((ws["catalog"] / "images").iterdir())
    cs: list[Case] = []

    def add(name: str, args: list[str], inputs: list[Path], outputs: list[Path] | None = None) -> None:
        cs.append(Case(name, args, inputs, outputs or []))

    for v, m in bad["model"].items():  # every command that reads a .tflite
        add(f"classify model={v}", ["classify", str(m), str(img)], [m])
        add(f"inspect model={v}", ["inspect", str(m)], [m])
        add(f"edgetpu check model={v}", ["edgetpu", "check", str(m)], [m])
        add(f"bundle model={v}", ["bundle", str(m), "--out", str(o / f"b_{v}")], [m], [o / f"b_{v}"])
        add(
            f"drift candidate={v}",
            ["drift", str(ws["model"]), str(m), "--data", "fashion-mnist:test:20"],
            [m],
        )
        add(
            f"index build model={v}",
            [
                "index",
                "build",
                str(ws["catalog"] / "products.csv"),
                "--model",
                str(m),
                "--out",
                str(o / f"i_{v}"),
            ],
            [m, ws["catalog"]],
            [o / f"i_{v}"],
        )
        add(f"search model={v}", ["search", str(ws["index"]), str(img), "--model", str(m)], [m, ws["index"]])
        add(f"eval model={v}", ["eval", str(m), "--data", "fashion-mnist:test:20"], [m])
        add(f"convert model={v}", ["convert", str(m), "--out", str(o / f"c_{v}")], [m], [o / f"c_{v}"])
    for v, i in bad["image"].items():
        add(f"classify image={v}", ["classify", str(ws["model"]), str(i)], [i])
        add(f"search image={v}", ["search", str(ws["index"]), str(i)], [i, ws["index"]])
    for v, f in bad["folder"].items():
        add(f"classify folder={v}", ["classify", str(ws["model"]), str(f)], [f])
        add(f"eval folder={v}", ["eval", str(ws["keras"]), "--data", str(f)], [f])
        add(f"data info folder={v}", ["data", "info", str(f)], [f])
        add(
            f"index build folder={v}",
            ["index", "build", str(f), "--model", str(ws["emb"]), "--out", str(o / f"if_{v}")],
            [f],
            [o / f"if_{v}"],
        )
        add(
            f"convert calib={v}",
            ["convert", str(ws["keras"]), "--calib-data", str(f), "--out", str(o / f"cc_{v}")],
            [f],
            [o / f"cc_{v}"],
        )
    for v, c in bad["csv"].items():
        add(
            f"index build csv={v}",
            ["index", "build", str(c), "--model", str(ws["emb"]), "--out", str(o / f"ic_{v}")],
            [c],
            [o / f"ic_{v}"],
        )
    for v, ix in bad["index"].items():
        add(f"search index={v}", ["search", str(ix), str(img)], [ix])
        add(f"index info index={v}", ["index", "info", str(ix)], [ix])
        add(f"index remove index={v}", ["index", "remove", str(ix), "SL-nope"], [ix])
    for kind in ("labels", "contract"):  # the sidecar files classify, eval and convert accept
        for v, f in bad[kind].items():
            add(f"classify {kind}={v}", ["classify", str(ws["model"]), str(img), f"--{kind}", str(f)], [f])
            add(
                f"eval {kind}={v}",
                ["eval", str(ws["keras"]), "--data", "fashion-mnist:test:20", f"--{kind}", str(f)],
                [f],
            )
            out = o / f"c_{kind}_{v}"
            add(
                f"convert {kind}={v}",
                ["convert", str(ws["keras"]), f"--{kind}", str(f), "--out", str(out)],
                [f],
                [out],
            )
    for v, f in bad["outputs"].items():
        add(
            f"drift device-outputs={v}",
            ["drift", "--bundle", str(ws["bundle"]), "--device-outputs", str(f)],
            [f, ws["bundle"]],
        )
    for v, s in bad["spec"].items():
        for cmd in (["eval", str(ws["keras"])], ["drift", str(ws["model"]), str(ws["model"])]):
            add(f"{cmd[0]} data={v}", [*cmd, "--data", str(s)], [ws["keras"], ws["model"]])
        add(f"data info spec={v}", ["data", "info", str(s)], [])
        add(
            f"convert calib-spec={v}",
            ["convert", str(ws["keras"]), "--calib-data", str(s), "--out", str(o / f"cs_{v}")],
            [ws["keras"]],
            [o / f"cs_{v}"],
        )
    opts = option_cases(ws, bad, img, o)
    for name, args in opts:
        outs = [Path(a) for a in args if a.startswith(str(o))]
        add(name, args, [ws["model"], ws["keras"], ws["catalog"], ws["index"], ws["bundle"]], outs)
    return cs


def judge(case: Case) -> dict[str, Any]:
    before = _digest(case.inputs)
    t0 = time.perf_counter()
    try:
        p = shoplens(*case.args)
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        rc, err = -9, "timeout"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    after = _digest(case.inputs)
    # one "error: ..." line; besides it only a "try --help" hint or the per-file "...; skipped" notices
    errors = [ln for ln in lines if ln.startswith("error: ")]
    other = [ln for ln in lines if not ln.startswith(("error: ", "try ")) and not ln.endswith("; skipped")]
    clean = rc in (1, 2) and len(errors) == 1 and not other and "Traceback" not in err
    verdict = "accepted" if rc == 0 else "clean" if clean else "crash"
    left = [str(x) for x in case.outputs if rc != 0 and x.exists()]
    return {
        "case": case.name,
        "exit": rc,
        "verdict": verdict,
        "first_line": (errors or lines or [""])[0][:200],
        "stderr_lines": len(lines),
        "input_changed": before != after,
        "left_output": left,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def sdk_calls(ws: dict[str, Path], bad: dict[str, dict[str, Path]]) -> list[dict[str, Any]]:
    """The SDK's public calls with bad arguments, in this process: each must raise a ShopLensError
    subclass with a one-line message (``clean``); any other exception, or none, is listed."""
    import numpy as np

    from shoplens import CatalogIndex, Classifier, Embedder, ShopLensError

    good_frame = np.zeros((480, 640, 3), np.uint8)
    frames: dict[str, Any] = {
        "None": None,
        "list": [[1, 2, 3]],
        "empty": np.zeros((0, 0, 3), np.uint8),
        "1x1": np.zeros((1, 1, 3), np.uint8),
        "5 channels": np.zeros((64, 64, 5), np.uint8),
        "4-d": np.zeros((1, 64, 64, 3), np.uint8),
        "float 0-255": good_frame.astype(np.float32) + 200,
        "float NaN": np.full((64, 64, 3), np.nan, np.float32),
        "int64": np.zeros((64, 64, 3), np.int64),
        "bool": np.zeros((64, 64, 3), bool),
        "complex": np.zeros((64, 64, 3), np.complex64),
    }
    calls: list[tuple[str, Any]] = []
    for v, m in bad["model"].items():
        calls.append((f"Classifier model={v}", lambda m=m: Classifier.create_from_model_path(m)))
        calls.append((f"Embedder model={v}", lambda m=m: Embedder.create_from_model_path(m)))
    for kw in (
        {"max_results": 0},
        {"max_results": -1},
        {"num_threads": 0},
        {"score_threshold": 2.0},
        {"running_mode": "sideways"},
        {"category_allowlist": ["No such label"]},
        {"no_such_option": 1},
    ):
        calls.append((f"Classifier {kw}", lambda kw=kw: Classifier.create_from_model_path(ws["model"], **kw)))
    clf = Classifier.create_from_model_path(ws["model"])
    emb = Embedder.create_from_model_path(ws["emb"])
    for v, f in frames.items():
        calls.append((f"classify frame={v}", lambda f=f: clf.classify(f)))
        calls.append((f"embed frame={v}", lambda f=f: emb.embed(f)))
    calls.append(("classify_for_video in IMAGE mode", lambda: clf.classify_for_video(good_frame, 1)))
    calls.append(("classify_async in IMAGE mode", lambda: clf.classify_async(good_frame, 1)))
    for v, ix in bad["index"].items():
        calls.append((f"CatalogIndex.load index={v}", lambda ix=ix: CatalogIndex.load(ix)))
    idx = CatalogIndex.load(ws["index"])
    q = emb.embed(good_frame).embedding
    for name, args, kw in (
        ("k=0", (q, 0), {}),
        ("k=-1", (q, -1), {}),
        ("k=1.5", (q, 1.5), {}),
        ("short query", (q[:-1], 3), {}),
        ("NaN query", (q * np.nan, 3), {}),
        ("string query", ("red dress", 3), {}),
        ("unknown category", (q, 3), {"category": "X"}),
        ("unknown column", (q, 3), {"where": {"size": "M"}}),
        ("unknown colour", (q, 3), {"colour": "mauve"}),
        ("empty price range", (q, 3), {"price": (50.0, 10.0)}),
    ):
        calls.append((f"search {name}", lambda args=args, kw=kw: idx.search(*args, **kw)))
    rows = []
    for name, fn in calls:
        try:
            fn()
            verdict, msg = "accepted", ""
        except ShopLensError as exc:
            verdict, msg = ("clean" if "\n" not in exc.message else "crash"), exc.message
        except Exception as exc:  # the battery records what escapes
            verdict, msg = "crash", f"{type(exc).__name__}: {exc}"
        rows.append(
            {
                "case": f"sdk {name}",
                "verdict": verdict,
                "first_line": str(msg)[:200],
                "exit": None,
                "input_changed": False,
                "left_output": [],
            }
        )
    clf.close()
    emb.close()
    return rows


def run(quick: bool = False) -> dict[str, Any]:
    from rich.progress import Progress

    ws = workspace()
    bad = bad_files(ws, quick)
    shutil.rmtree(WORK / "outs", ignore_errors=True)
    (WORK / "outs").mkdir()
    shutil.rmtree(WORK / "index_copy", ignore_errors=True)
    shutil.copytree(ws["index"], WORK / "index_copy")
    (WORK / "dev.json").write_text("{}")
    all_cases = cases(ws, bad)
    rows = []
    with Progress() as bar:
        task = bar.add_task("bad-input battery", total=len(all_cases))
        for c in all_cases:
            rows.append(judge(c))
            bar.advance(task)
    cli = len(rows)
    rows += sdk_calls(ws, bad)
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("clean", "accepted", "crash")}
    return {
        "date": time.strftime("%Y-%m-%d"),
        "quick": quick,
        "cases": len(rows),
        "cli_cases": cli,
        "sdk_calls": len(rows) - cli,
        **counts,
        "input_changed": sum(r["input_changed"] for r in rows),
        "left_output": sum(bool(r["left_output"]) for r in rows),
        "rows": rows,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    res = run(ap.parse_args().quick)
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1))
    for r in res["rows"]:
        if r["verdict"] != "clean" or r["input_changed"] or r["left_output"]:
            marks = (" INPUT CHANGED" if r["input_changed"] else "") + (
                f" LEFT {r['left_output']}" if r["left_output"] else ""
            )
            print(f"{r['verdict']:<8} exit {r['exit']!s:<4} {r['case']}: {r['first_line'][:120]}{marks}")
    out = (
        ROOT / "benchmarks" / "results" / f"battery-{res['date']}{'-quick' if res.get('quick') else ''}.json"
    )
    atomic_write_text(out, json.dumps(res, indent=1) + "\n", overwrite=True)
