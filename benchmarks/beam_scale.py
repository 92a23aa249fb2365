"""Catalog drift: one process against Apache Beam's DirectRunner with 1 and 2 workers.

The same images (Fashion-MNIST training images written as PNG files, one folder per class) and the
same two models (the reference model as float32 and int8), measured side by side in one run:
images per second and the peak resident memory of the whole process tree (driver and workers,
sampled every 50 ms from /proc). Runs in the Beam venv (``.venv-beam``), as a catalog run would.

    .venv/bin/python -m benchmarks.beam_scale --images 60000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
from pathlib import Path

from benchmarks import ROOT

BEAM_CLI = ROOT / ".venv-beam" / "bin" / "shoplens"


def write_catalog(out: Path, n: int) -> Path:
    import cv2

    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist

    root = out / f"catalog-{n}"
    marker = root / ".complete"
    if marker.is_file():
        return root
    x, y = load_fashion_mnist("train")
    for i in range(n):
        d = root / FASHION_MNIST_LABELS[int(y[i])].replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i:05d}.png"), x[i])
    marker.write_text("ok\n")
    return root


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            ppid = int(stat[1])
            pages = int((d / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
        rss[int(d.name)] = pages
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss_mb(proc.pid))
            done.wait(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    done.set()
    th.join()
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": (err.strip().splitlines() or ["failed"])[-1], "seconds": round(secs, 1)}
    d = json.loads(out)
    return {"seconds": round(secs, 2), "images": d["n"], "images_per_s": round(d["n"] / secs, 1),
            "peak_rss_mb": round(peak[0], 1), "agreement": d["agreement"]}  # fmt: skip


def run(out: Path, n: int, reference: Path, candidate: Path) -> dict:
    if not BEAM_CLI.exists():
        return {"error": ".venv-beam is missing (make setup creates it)"}
    catalog = write_catalog(out, n)
    base = [str(BEAM_CLI), "drift", str(reference), str(candidate), "--data", str(catalog), "--json",
            "--cause-sample", "0"]  # fmt: skip
    res = {"images": n, "in_process": measure(base)}
    for w in (1, 2):
        key = f"direct_{w}_worker{'s' if w > 1 else ''}"
        res[key] = measure([*base, "--runner", "direct", "--workers", str(w)])
    ip = res["in_process"].get("images_per_s")
    for key in ("direct_1_worker", "direct_2_workers"):
        if ip and res[key].get("images_per_s"):
            res[key]["ratio_to_in_process"] = round(res[key]["images_per_s"] / ip, 3)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=60000)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--candidate", type=Path, required=True)
    a = ap.parse_args()
    print(json.dumps(run(a.out, a.images, a.reference, a.candidate), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
