"""ShopLens benchmarks: measured side by side in one run, written to docs/benchmarks.md.

    make bench                      # or: .venv/bin/python -m benchmarks
    .venv/bin/python -m benchmarks --quick   # smoke run, under 2 min; page in out/bench/

    .venv/bin/python -m benchmarks --resume   # go on after an interrupted run (sections kept at once)
    .venv/bin/python -m benchmarks --only peers --only scaling   # some sections now, the rest later
    .venv/bin/python -m benchmarks --render benchmarks/results/<file>.json   # rebuild the page only

Sections (each figure is a ratio measured in the same run; this machine is shared and noisy):

* Table 1: every converter recipe on the reference model (sizes, accuracy, agreement, invoke at 1
  and 2 threads; also writes docs/converter_targets.md); Table 2: where int8 pays off on a
  full-size MobileNetV2;
* visual search: embedding drift, precision@10; search at 1M and 100k items (HNSW and exact);

* the SDK against its peers on the reference int8 model and 640x480 BGR kiosk frames, one
  process per peer (naive loop, MediaPipe ImageClassifier, ShopLens IMAGE / VIDEO / LIVE_STREAM
  / with the quality gate), with frames/s, p50/p95, first inference, agreement and peak RSS;
* the quality gate: precision and recall on the generator's deliberately bad frames;
* accuracy of the int8 model through the SDK on good kiosk frames of the test split;
* RSS growth of a LIVE_STREAM classifier over many frames;
* catalog drift in one process against Apache Beam's DirectRunner with 1 and 2 workers (60,000 images).

Writes ``benchmarks/results/<date>-<host>.json`` and regenerates ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks import REF, ROOT, reference_key
from benchmarks.page import render_markdown
from benchmarks.peers import run_peers
from benchmarks.targets import all_targets
from shoplens.internal.atomic import atomic_write_text


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod, name in (("ai_edge_litert", "ai-edge-litert"), ("cv2", "opencv"), ("tensorflow", "tensorflow"),
                      ("mediapipe", "mediapipe")):  # fmt: skip
        try:
            from importlib.metadata import version

            versions[name] = version(
                {"cv2": "opencv-python-headless", "ai_edge_litert": "ai-edge-litert"}.get(mod, mod)
            )
        except Exception:
            versions[name] = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(), "host": socket.gethostname(), "versions": versions}


def build_float_model(out: Path) -> Path:
    """The reference model as float32 TFLite with its metadata (the reference of catalog drift)."""
    from shoplens.contract import PreprocessContract
    from shoplens_convert.load import find_labels, load_keras_model
    from shoplens_convert.metadata import embed_shoplens_metadata, shoplens_metadata_dict
    from shoplens_convert.quantize import quantize

    path = out / f"reference_f32-{reference_key('float32')}.tflite"
    if path.exists():
        return path
    loaded = load_keras_model(REF / "product_cnn.keras")
    contract = PreprocessContract.load(REF / "contract.json")
    labels = find_labels(loaded.path, None, loaded.num_classes)
    meta = shoplens_metadata_dict(contract, labels)
    path.write_bytes(embed_shoplens_metadata(quantize(loaded.model, "float32"), meta))
    return path


def build_int8_model(out: Path, calib_n: int) -> Path:
    """The reference model, int8 with uint8 I/O, calibrated through the SDK preprocessing."""
    from shoplens.contract import PreprocessContract
    from shoplens.data.spec import open_dataset
    from shoplens_convert.load import find_labels, load_keras_model
    from shoplens_convert.metadata import embed_shoplens_metadata, shoplens_metadata_dict
    from shoplens_convert.quantize import calibration_frames, quantize

    path = out / f"reference_int8-{reference_key('uint8', calib_n)}.tflite"
    if path.exists():
        return path
    loaded = load_keras_model(REF / "product_cnn.keras")
    contract = PreprocessContract.load(REF / "contract.json")
    calib = calibration_frames(open_dataset(f"fashion-mnist:train:{calib_n}"), contract, calib_n)
    tfl = quantize(loaded.model, "int8", calibration=calib, io_type="uint8")
    labels = find_labels(loaded.path, None, loaded.num_classes)
    path.write_bytes(embed_shoplens_metadata(tfl, shoplens_metadata_dict(contract, labels)))
    return path


def kiosk_frames(n: int, seed: int, bad_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from shoplens.data import load_fashion_mnist
    from shoplens.data.kiosk import KioskConfig, iter_kiosk_frames

    x, y = load_fashion_mnist("test")
    rows = list(iter_kiosk_frames(x, y, n, seed=seed, config=KioskConfig(bad_fraction=bad_fraction)))
    return np.stack([f for f, _, _ in rows]), np.array([lab for _, lab, _ in rows]), [b for _, _, b in rows]


SCALING_SIZES = ((320, 240), (640, 480), (1280, 720), (1920, 1080))


def scaling(model: Path, frames: np.ndarray, out: Path, runs: int) -> dict:
    """Frames/s of ShopLens and MediaPipe as the camera frame grows (same scenes, resized)."""
    res: dict = {}
    for w, h in SCALING_SIZES:
        sized = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in frames[:50]])
        path = out / f"frames_{w}x{h}.npy"
        np.save(path, sized)
        print(f" {w}x{h}", flush=True)
        res[f"{w}x{h}"] = run_peers(model, path, runs, ("shoplens", "mediapipe"))
        path.unlink()
    return res


def frame_profile(model: Path, frames_path: Path, runs: int) -> dict:
    """Where a ShopLens IMAGE frame spends its time: the result's own timing breakdown, plus the
    contract's resize of the centre crop on its own, and area averaging for comparison."""
    from shoplens.classifier import Classifier
    from shoplens.contract import Interpolation
    from shoplens.preprocess import resize_box

    frames = np.load(frames_path)
    parts = np.zeros(3)
    with Classifier.create_from_model_path(model) as clf:
        for i in range(100):
            clf.classify(frames[i % len(frames)])
        for i in range(runs):
            t = clf.classify(frames[i % len(frames)]).timing
            parts += (t.preprocess_ms, t.invoke_ms, t.postprocess_ms)
    parts /= runs
    fh, fw = frames.shape[1:3]
    s = min(fh, fw)
    box = ((fw - s) // 2, (fh - s) // 2, s, s)
    interp = clf.contract.interpolation
    t0 = time.perf_counter()
    for i in range(runs):
        resize_box(frames[i % len(frames)], box, (96, 96), interp)
    resize = (time.perf_counter() - t0) / runs * 1e3
    t0 = time.perf_counter()
    for i in range(runs):
        resize_box(frames[i % len(frames)], box, (96, 96), Interpolation.AREA)
    area = (time.perf_counter() - t0) / runs * 1e3
    return {
        "preprocess_ms": round(parts[0], 4),
        "invoke_ms": round(parts[1], 4),
        "postprocess_ms": round(parts[2], 4),
        "interpolation": interp.value,
        "resize_ms": round(resize, 4),
        "area_resize_ms": round(area, 4),
    }


def quality_gate(n: int) -> dict:
    """Precision and recall of the default gate on generated frames, half of them bad."""
    from shoplens.contract import PreprocessContract
    from shoplens.preprocess import Preprocessor
    from shoplens.quality import QualityOptions, gate_frame

    frames, _, reasons = kiosk_frames(n, seed=4242, bad_fraction=0.5)
    contract = PreprocessContract.load(REF / "contract.json")  # the reference model's own resize
    pre = Preprocessor(contract)
    opts = QualityOptions(policy="reject")
    rows = []
    buf = np.empty(pre.out_shape, pre.out_dtype)
    for f, why in zip(frames, reasons, strict=True):
        view = pre.process(f, buf)
        v = gate_frame(view.resized, view.crop, view.crop_side, opts,
                       resized_is_area=contract.interpolation.value == "area")  # fmt: skip
        rows.append((why, v))
    out: dict = {"frames": n, "per_reason": {}}
    tp = sum(1 for why, v in rows if why and not v.ok)
    fp = sum(1 for why, v in rows if not why and not v.ok)
    fn = sum(1 for why, v in rows if why and v.ok)
    out["precision"] = round(tp / max(tp + fp, 1), 4)
    out["recall"] = round(tp / max(tp + fn, 1), 4)
    out["good_rejected"] = fp
    fast = [why for why, v in rows if v.sharpness != v.sharpness]  # NaN: the first stage decided
    out["fast_decided"] = round(len(fast) / max(len(rows), 1), 4)
    good_rows = [v for why, v in rows if not why]
    fast_good = sum(v.sharpness != v.sharpness for v in good_rows)
    out["fast_decided_good"] = round(fast_good / max(len(good_rows), 1), 4)
    for reason in ("blur", "dark", "overexposed"):
        hits = [v for why, v in rows if why == reason]
        flagged = sum(1 for v in hits if reason in v.reasons)
        claimed = sum(1 for _, v in rows if reason in v.reasons)
        out["per_reason"][reason] = {
            "frames": len(hits),
            "recall": round(flagged / max(len(hits), 1), 4),
            "precision": round(flagged / max(claimed, 1), 4),
        }
    return out


def kiosk_accuracy(model: Path, n: int) -> dict:
    """int8 through the SDK on the same good kiosk frames the training log's float figure used."""
    from shoplens.classifier import Classifier
    from shoplens.data import load_fashion_mnist
    from shoplens.data.kiosk import iter_kiosk_frames

    log = json.loads((REF / "training_log.json").read_text())
    seed = int(log.get("kiosk_seed", 2026))
    x, y = load_fashion_mnist("test")
    hits = 0
    with Classifier.create_from_model_path(model) as clf:
        for frame, label, _ in iter_kiosk_frames(x, y, n, seed=seed):
            hits += int(clf.classify(frame).top.index == label)
    return {
        "frames": n,
        "int8_top1": round(hits / n, 4),
        "float_test_top1": log.get("test_top1"),
        "float_kiosk_top1": log.get("kiosk_top1"),
    }


def soak(model: Path, n: int) -> dict:
    """LIVE_STREAM memory over ``n`` frames: ``benchmarks.soak`` (``make soak``) in its own process."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.soak", "--frames", str(n), "--model", str(model),
                           "--no-save"], capture_output=True, text=True, cwd=ROOT, timeout=7200)  # fmt: skip
    if proc.returncode not in (0, 1):
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


class Run:
    """What every section reads: the run's flags, the reference int8 model and the kiosk frames."""

    def __init__(self, out: Path, quick: bool) -> None:
        self.out, self.quick = out, quick
        print("building the reference int8 model", flush=True)
        self.model = build_int8_model(out, 100 if quick else 300)
        self.n_frames = 50 if quick else 200
        self.frames, _, _ = kiosk_frames(self.n_frames, seed=99)
        self.frames_path = out / "frames.npy"
        np.save(self.frames_path, self.frames)

    def n(self, quick: int, full: int) -> int:
        return quick if self.quick else full


def s_peers(c: Run) -> dict:
    peers = run_peers(c.model, c.frames_path, c.n(300, 3000), rounds=c.n(1, 3))
    return {"frames": c.n_frames, "peers": peers}


def s_scaling(c: Run) -> dict:
    return {"scaling": scaling(c.model, c.frames, c.out, c.n(200, 1000)),
            "profile": frame_profile(c.model, c.frames_path, c.n(300, 3000))}  # fmt: skip


def s_colour(c: Run) -> dict:
    from benchmarks import colour as colour_bench

    res = colour_bench.run(c.n(200, 1000))
    res["cost"] = colour_bench.cost(c.model, c.frames, c.n(3, 15))
    return {"colour": res}


def s_open_set(c: Run) -> dict:
    from benchmarks import open_set

    return {"open_set": open_set.run(quick=c.quick)}


def s_recipes(c: Run) -> dict:
    from benchmarks import convert_targets, where_int8_pays

    res = convert_targets.run(c.quick, 58000, 2, ["float32", "int8"] if c.quick else None)
    if c.quick:
        return {"recipes": res}
    res = convert_targets.finish(res)
    convert_targets.write_markdown(res, ROOT / "docs" / "converter_targets.md")
    print("Table 2: where int8 pays off (MobileNetV2 1.0, 224x224)", flush=True)
    models = where_int8_pays.build_models()
    pays = [{"recipe": name, "bytes": len(m), **{f"t{t}": where_int8_pays.time_invoke(m, t) for t in (1, 2)}}
            for name, m in models.items()]  # fmt: skip
    return {"recipes": res, "where_int8_pays": pays}


def s_channels(c: Run) -> dict:
    from benchmarks import channels

    return {"channels": channels.run(c.quick, (0.5,) if c.quick else channels.RATIOS)}


def s_search(c: Run) -> dict:
    from benchmarks.search import run as search_run

    return {"search": search_run(c.out, quick=c.quick)}


def s_search_scale(c: Run) -> dict:
    from benchmarks import search_scale

    return {"search_scale": search_scale.run(c.out, quick=c.quick)}


def s_beam(c: Run) -> dict:
    from benchmarks import beam_scale

    return {"beam": beam_scale.run(c.out, c.n(2000, 60000), build_float_model(c.out), c.model)}


# (key, what the progress line says, section); each returns the results it adds
SECTIONS = (
    ("peers", "SDK against its peers", s_peers),
    ("scaling", "scaling with frame size", s_scaling),
    ("quality_gate", "quality gate", lambda c: {"quality_gate": quality_gate(c.n(200, 1000))}),
    ("colour", "product colour on the labelled colour set", s_colour),
    ("open_set", "open-set answers ('not a product') on the released reference model", s_open_set),
    ("kiosk_accuracy", "kiosk accuracy",
     lambda c: {"kiosk_accuracy": kiosk_accuracy(c.model, c.n(200, 2000))}),
    ("soak", "LIVE_STREAM memory soak", lambda c: {"soak": soak(c.model, c.n(5000, 100_000))}),
    ("recipes", "Table 1: recipes on the reference model", s_recipes),
    ("channels", "channel pruning (structured) on the reference model", s_channels),
    ("search", "visual search", s_search),
    ("search_scale", "search at catalog scale (1M embeddings; the first run embeds them, about 25 min)",
     s_search_scale),
    ("beam", "catalog drift: one process against Beam's DirectRunner", s_beam),
)


# what a run writes itself: a change there does not make the measured checkout "dirty"
RUN_OUTPUTS = ("benchmarks/results", "docs/benchmarks.md", "docs/converter_targets.md",
               "docs/where_int8_pays.md")  # fmt: skip


def _commit() -> str:
    """The checkout a section was measured on, ``-dirty`` when its code differs; '' without git."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    head = git("describe", "--always")
    if not head:
        return ""
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  *(f":(exclude){p}" for p in RUN_OUTPUTS))  # fmt: skip
    return head + ("" if changed == "" else "-dirty")  # a failed status does not vouch for a clean tree


def _checkpoint(path: Path, r: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(r, indent=2, default=str) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="ShopLens benchmarks")
    ap.add_argument("--quick", action="store_true", help="a smoke run of under 2 minutes")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    ap.add_argument("--render", type=Path, help="only rebuild docs/benchmarks.md from a results file")
    ap.add_argument("--resume", action="store_true",
                    help="keep the sections a stopped run on the same reference model finished")  # fmt: skip
    ap.add_argument("--only", action="append", choices=[k for k, _, _ in SECTIONS],
                    help="run this section only (repeatable); the page waits for the rest")  # fmt: skip
    args = ap.parse_args(argv)
    if args.render:
        r = json.loads(args.render.read_text())
        # the targets follow from the measured sections: recomputed, so the page shows today's rules
        r["targets"] = {**{k: tuple(v) for k, v in r.get("targets", {}).items()}, **all_targets(r)}
        atomic_write_text(ROOT / "docs" / "benchmarks.md", render_markdown(r), overwrite=True)
        print(f"rebuilt docs/benchmarks.md from {args.render}")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args.out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    run = Run(args.out, quick)
    # every finished section is kept at once: a run stopped (or killed) late loses only the section
    # it was in, and --resume goes on from there on the same reference model. A full run keeps them
    # beside the results, so a stopped run can be committed and resumed on another machine.
    res_dir = args.out if quick else ROOT / "benchmarks" / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    partial = res_dir / f"bench-partial{'-quick' if quick else ''}.json"
    r: dict = {}
    if (args.resume or args.only) and partial.exists():
        r = json.loads(partial.read_text())
        if r.get("model") != run.model.name:
            print(f"not resuming: {partial.name} was measured on {r.get('model')}", flush=True)
            r = {}
    if not r:
        r = {"quick": quick, "model": run.model.name, "started": dt.date.today().isoformat(), "sections": {}}
    for key, what, section in SECTIONS:
        if key in r["sections"] or (args.only and key not in args.only):
            continue
        print(what, flush=True)
        t = time.time()
        r.update(section(run))
        r["sections"][key] = {"date": dt.date.today().isoformat(), "seconds": round(time.time() - t, 1),
                              "commit": _commit()}  # fmt: skip
        _checkpoint(partial, r)
    missing = [k for k, _, _ in SECTIONS if k not in r["sections"]]
    if missing:
        print(f"sections {', '.join(missing)} not run yet: {partial} holds the others (--resume)")
        return 0
    r.update(date=dt.date.today().isoformat(), machine=machine(), targets=all_targets(r))
    r["seconds"] = round(sum(v["seconds"] for v in r["sections"].values()), 1)
    name = f"{r['date']}-{r['machine']['host']}{'-quick' if quick else ''}.json"
    r["results_file"] = str((res_dir / name).relative_to(ROOT) if (res_dir / name).is_relative_to(ROOT)
                            else res_dir / name)
    atomic_write_text(res_dir / name, json.dumps(r, indent=2, default=str) + "\n", overwrite=True)
    # a --quick smoke run must not replace the published page with smoke figures
    page = args.out / "benchmarks-quick.md" if quick else ROOT / "docs" / "benchmarks.md"
    atomic_write_text(page, render_markdown(r), overwrite=True)
    partial.unlink()
    print(f"wrote {r['results_file']} and {page.relative_to(ROOT) if page.is_relative_to(ROOT) else page} "
          f"in {r['seconds']} s")
    for name, (value, ok) in r["targets"].items():
        print(f"  {'ok  ' if ok else 'MISS'} {name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
