"""Fuzz the model loader: N mutated copies of the reference int8 model, each loaded and run.

    .venv/bin/python -m benchmarks.fuzz_models [--n 2000] [--seed 1] [--model M.tflite]   # make fuzz

Mutations: truncation at a random length, 1-16 random byte flips, a zero-length file, and a tensor
whose declared shape is huge. Each model goes to a worker subprocess that calls
``Classifier.create_from_model_path`` and classifies one frame, so a crash (a signal) kills only
the worker, which is counted and restarted. Outcomes: ``clean_error`` (a ShopLens error with a
message), ``passed`` (loaded and classified: the mutation hit bytes that do not matter),
``other_error`` (any other exception: a bug), ``crashed`` (the process died). Target: 0 crashes,
0 other errors. Writes ``benchmarks/results/fuzz-models-<date>.json``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import ROOT
from shoplens.internal.atomic import atomic_write_text

WORKER = r"""
import sys, traceback
import numpy as np
from shoplens.classifier import Classifier
from shoplens.errors import ShopLensError
frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
for line in sys.stdin:
    path = line.strip()
    try:
        with Classifier.create_from_model_path(path) as clf:
            clf.classify(frame)
        out = "passed"
    except ShopLensError as e:
        out = "clean_error\t" + type(e).__name__ + "\t" + " ".join(str(e).split())[:160]
    except BaseException as e:
        out = "other_error\t" + type(e).__name__ + "\t" + " ".join(str(e).split())[:160]
    sys.stdout.write(out + "\n")
    sys.stdout.flush()
"""


def huge_tensor(model: bytes, rng: np.random.Generator) -> bytes:
    """The model with one activation tensor declaring a huge shape."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    sg = m.subgraphs[0]
    t = sg.tensors[int(rng.integers(len(sg.tensors)))]
    t.shape = np.array([1, 1 << 20, 1 << 20, 64], np.int32)
    b = flatbuffers.Builder(len(model) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def mutate(model: bytes, kind: str, rng: np.random.Generator) -> bytes:
    if kind == "empty":
        return b""
    if kind == "truncate":
        return model[: int(rng.integers(0, len(model)))]
    if kind == "flip":
        b = bytearray(model)
        for _ in range(int(rng.integers(1, 17))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
        return bytes(b)
    if kind == "huge":
        return huge_tensor(model, rng)
    raise ValueError(kind)


class Worker:
    def __init__(self) -> None:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL}
        self.p = subprocess.Popen([sys.executable, "-c", WORKER], text=True, env=env, **pipes)

    def run(self, path: str) -> str:
        assert self.p.stdin is not None and self.p.stdout is not None
        try:
            self.p.stdin.write(path + "\n")
            self.p.stdin.flush()
            line = self.p.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self.p.wait()
            rc = self.p.returncode
            return f"crashed\tsignal {-rc}" if rc is not None and rc < 0 else f"crashed\texit {rc}"
        return line.rstrip("\n")

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.stdin.close()  # type: ignore[union-attr]
            self.p.wait(timeout=10)


def run(model_path: Path, n: int, seed: int, keep: Path | None = None) -> dict:
    rng = np.random.default_rng(seed)
    model = model_path.read_bytes()
    kinds = ["flip"] * 70 + ["truncate"] * 25 + ["huge"] * 4 + ["empty"] * 1
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    examples: dict[str, list[str]] = collections.defaultdict(list)
    worker = Worker()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            kind = kinds[int(rng.integers(len(kinds)))]
            path = Path(tmp) / f"m{i}.tflite"
            path.write_bytes(mutate(model, kind, rng))
            res = worker.run(str(path))
            outcome = res.split("\t", 1)[0]
            counts[kind][outcome] += 1
            if outcome in ("crashed", "other_error") and len(examples[outcome]) < 10:
                examples[outcome].append(f"{kind}: {res}")
            if outcome == "crashed":
                worker = Worker()
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    (keep / f"crash-{i}-{kind}.tflite").write_bytes(path.read_bytes())
            path.unlink()
    worker.close()
    total = collections.Counter()
    for c in counts.values():
        total.update(c)
    return {
        "model": str(model_path),
        "n": n,
        "seed": seed,
        "seconds": round(time.perf_counter() - t0, 1),
        "outcomes": dict(total),
        "by_mutation": {k: dict(v) for k, v in counts.items()},
        "examples": dict(examples),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--model", type=Path, default=None, help="default: the reference int8 model make bench builds"
    )
    ap.add_argument("--keep", type=Path, default=None, help="save models that crashed the worker here")
    args = ap.parse_args(argv)
    if args.model is None:
        from benchmarks.__main__ import build_int8_model

        (ROOT / "out" / "bench").mkdir(parents=True, exist_ok=True)
        args.model = build_int8_model(ROOT / "out" / "bench", 300)
    res = run(args.model, args.n, args.seed, args.keep)
    print(json.dumps(res, indent=2))
    out = ROOT / "benchmarks" / "results" / f"fuzz-models-{dt.date.today().isoformat()}.json"
    atomic_write_text(out, json.dumps(res, indent=2) + "\n", overwrite=True)
    return 1 if res["outcomes"].get("crashed") or res["outcomes"].get("other_error") else 0


if __name__ == "__main__":
    sys.exit(main())
