"""ShopLens in-store kiosk: camera (or video) -> quality gate -> smoothed classification -> live web page.

Run it after ``make demo`` (which converts the reference model and renders a kiosk video):

    .venv/bin/python sample_apps/kiosk/app.py                        # the demo video, http://127.0.0.1:8080
    .venv/bin/python sample_apps/kiosk/app.py --source 0             # camera 0
    .venv/bin/python sample_apps/kiosk/app.py --headless             # JSON lines on stdout, no server
    .venv/bin/python sample_apps/kiosk/app.py --index out/demo/index # + the 4 most similar products

The SDK runs in LIVE_STREAM mode with smoothing and the quality gate (policy ``reject``). Every
result puts the page in one state (``answer`` in ``/api/result``), never a stale one:

- ``confident``: the smoothed top label, its score, the top 3 (the same smoothed scores) and colours;
- ``not_sure``: the top score is under ``--confident`` (0.85, chosen on data so that 95 % of the
  confident answers are right: ``python -m benchmarks.kiosk_confidence``); "not sure, turn the item";
- ``not_a_product``: the smoothed top score is under ``--min-score`` (the SDK's open-set
  threshold, calibrated for the reference model; docs/sdk.md): "no product recognised";
- ``retake``: the gate rejected the frame; its prompt ("hold the item still") and no label;
- ``no_camera``: the camera delivers nothing; "camera unavailable" instead of the frame.

In ``not_sure``, ``not_a_product`` and ``retake`` the last confident answer is shown as such
("last item: Dress"), never as the current one. Similar products (``--index``) are replaced only
when the item changes, with names and prices. Operator figures (fps, ms, frame number) are behind
the page's "operator" toggle and on ``/healthz`` (503 while the camera is unavailable);
``/api/result`` serves the state.

A camera that stops delivering frames (``read()`` fails, or the video file disappears) is shown
as "camera unavailable" and reopened every second; SIGINT and SIGTERM shut everything down
cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "out" / "demo" / "model" / "model.tflite"
DEFAULT_VIDEO = ROOT / "out" / "demo" / "kiosk_video" / "kiosk.avi"
PAGE = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")


class Kiosk:
    """Owns the capture thread, the classifier (LIVE_STREAM) and the state the page reads."""

    def __init__(self, args: argparse.Namespace) -> None:
        from shoplens import (
            BaseOptions,
            Classifier,
            ColourOptions,
            ImageClassifierOptions,
            OpenSetOptions,
            QualityOptions,
            QualityPolicy,
            RunningMode,
            SmoothingOptions,
        )

        self.args = args
        from shoplens.sources import VideoSource

        # the SDK's one frame source: reopened when the camera drops out, looped for a demo video
        self.source = VideoSource(str(args.source), loop=not args.once, reopen=True)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ts_to_pos: OrderedDict[int, int] = OrderedDict()
        self.jpeg: bytes | None = None
        self.frames_read = 0
        self.results = 0
        self.fps = 0.0
        self.last_result_t = 0.0
        self.state: dict[str, Any] = {"status": "starting", "answer": "none", "label": None, "score": None,
                                      "top3": [], "prompt": "", "similar": [], "colours": [],
                                      "last_item": None}  # fmt: skip
        self.clf = Classifier(ImageClassifierOptions(
            base_options=BaseOptions(model_asset_path=args.model, num_threads=args.threads,
                                     cpu_kernels=args.cpu_kernels),
            running_mode=RunningMode.LIVE_STREAM,
            result_callback=self._on_result,
            smoothing=SmoothingOptions(),
            quality=QualityOptions(policy=QualityPolicy.REJECT),
            colour=ColourOptions(enabled=not args.no_colour, white_balance="auto"),
            open_set=OpenSetOptions(min_score=args.min_score if args.min_score >= 0 else None),
        ))  # fmt: skip
        self.search = SimilarProducts(args) if args.index else None

    # -- results ----------------------------------------------------------------------------
    def _on_result(self, result: Any, frame: np.ndarray | None, ts: int) -> None:
        now = time.perf_counter()
        pos = self.ts_to_pos.get(ts, -1)
        with self.lock:
            self.results += 1
            if self.last_result_t:
                dt = now - self.last_result_t
                self.fps = 0.9 * self.fps + 0.1 * (1.0 / dt) if self.fps else 1.0 / max(dt, 1e-6)
            self.last_result_t = now
            s = self.state
            s["source_frame"] = pos
            s["timestamp_ms"] = ts
            s["latency_ms"] = round(result.timing.total_ms, 2)
            s["fps"] = round(self.fps, 1)
            s["reasons"] = list(result.quality.reasons)
            s.update(answer_state(result, self.args.confident, s.get("last_item")))
            s["stream"] = self.clf.stream_stats.to_dict()
        if self.args.headless:
            line = {"source_frame": pos, **result.to_dict()}
            try:
                sys.stdout.write(json.dumps(line) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:  # the reader went away (e.g. | head): stop quietly
                self.stop.set()
        with self.lock:
            confident = self.state["answer"] == "confident"
        if self.search is not None and frame is not None and confident:
            similar = self.search.maybe_update(frame, result.categories[0].label)
            if similar is not None:
                with self.lock:
                    self.state["similar"] = similar

    # -- capture loop -----------------------------------------------------------------------
    def run_capture(self) -> None:
        ts = 0
        next_t = time.perf_counter()
        last_jpeg = 0.0
        down = False  # said once when the camera goes away, once when it is back
        while not self.stop.is_set():
            frame = self.source.read()
            if frame is None:
                if not down and (self.source.is_camera or not self.frames_read):
                    what = f"{'camera' if self.source.is_camera else 'video'} {self.args.source}"
                    sys.stderr.write(f"{what} unavailable; retrying every second (Ctrl-C to stop)\n")
                down = True
                with self.lock:
                    self.state.update(status="camera unavailable", answer="no_camera", prompt="", label=None,
                                      score=None, top3=[], colours=[])  # fmt: skip
                if self.args.once and not self.source.is_camera and self.frames_read:
                    self.stop.set()
                    break
                self.stop.wait(1.0)  # retry once a second
                next_t = time.perf_counter()
                continue
            if down and self.source.is_camera:
                sys.stderr.write(f"camera {self.args.source} is back\n")
            down = False
            with self.lock:
                self.state["status"] = "ok"
                self.frames_read += 1
            ts += int(1000 / self.source.fps) or 1
            self.ts_to_pos[ts] = self.source.position
            while len(self.ts_to_pos) > 512:
                self.ts_to_pos.popitem(last=False)
            self.clf.classify_async(frame, ts)
            now = time.perf_counter()
            if not self.args.headless and now - last_jpeg >= 0.08:
                ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 75])
                if ok:
                    with self.lock:
                        self.jpeg = buf.tobytes()
                last_jpeg = now
            if not self.source.is_camera and not self.args.fast:
                next_t += 1.0 / self.source.fps  # play the video at its own speed
                delay = next_t - time.perf_counter()
                if delay > 0:
                    self.stop.wait(delay)
                else:
                    next_t = time.perf_counter()
        self.clf.wait_idle(2.0)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {**self.state, "frames_read": self.frames_read, "results": self.results}

    def health(self) -> tuple[bool, dict[str, Any]]:
        with self.lock:
            age = time.perf_counter() - self.last_result_t if self.last_result_t else None
            ok = self.state["status"] == "ok" and age is not None and age < 5
            return ok, {"ok": ok, "camera": self.state["status"], "frames_read": self.frames_read,
                        "last_result_age_s": None if age is None else round(age, 2),
                        "cpu_kernels": self.clf.cpu_kernels}  # fmt: skip

    def close(self) -> None:
        self.stop.set()
        self.clf.close()
        self.source.close()
        if self.search is not None:
            self.search.close()


def answer_state(result: Any, confident: float, last_item: dict[str, Any] | None) -> dict[str, Any]:
    """What the page shows for one result: one state, and nothing left over from an earlier frame."""
    top = result.categories[0] if result.categories and not result.rejected else None
    if result.rejected or top is None:
        answer, prompt = "retake", (result.quality.hint if result.rejected else "show an item")
    elif result.is_product is False:
        answer, prompt = "not_a_product", "no product recognised: show one item to the camera"
    elif top.score < confident:
        answer, prompt = "not_sure", "not sure: turn the item or hold it closer"
    else:
        answer, prompt = "confident", ""
        last_item = {"label": top.label, "score": round(top.score, 4)}
    shown = answer == "confident"
    return {
        "answer": answer,
        "prompt": prompt,
        "label": top.label if shown and top is not None else None,
        "score": round(top.score, 4) if shown and top is not None else None,
        # the top 3 of the same smoothed scores as the headline, or nothing
        "top3": [{"label": c.label, "score": round(c.score, 4)} for c in result.categories[:3] if shown],
        "colours": [c.to_dict() for c in result.colours] if shown else [],
        "last_item": last_item,
    }


class SimilarProducts:
    """The 4 most similar catalog products for the current item, refreshed when the label changes."""

    def __init__(self, args: argparse.Namespace) -> None:
        from shoplens import CatalogIndex, Embedder

        emb = Path(args.embedding) if args.embedding else Path(args.model).with_name("embedding.tflite")
        self.index = CatalogIndex.load(args.index, model=emb)
        self.embedder = Embedder.create_from_model_path(emb, cpu_kernels=args.cpu_kernels)
        self.last_label: str | None = None
        self.last_t = 0.0

    def maybe_update(self, frame: np.ndarray, label: str) -> list[dict[str, Any]] | None:
        now = time.perf_counter()
        if label == self.last_label and now - self.last_t < 2.0:
            return None
        self.last_label, self.last_t = label, now
        r = self.embedder.embed(frame)
        if r.embedding is None:
            return None
        hits = self.index.search(r.embedding, 4, category=label)
        return [{**h.to_dict(), "name": _product_name(h.product), "thumb": f"/thumb/{h.row}"} for h in hits]

    def thumbnail(self, i: int) -> bytes | None:
        if not 0 <= i < self.index.rows or self.index.is_removed(i):
            return None
        img = cv2.imread(self.index.product(i).image, cv2.IMREAD_COLOR)
        if img is None:
            return None
        img = cv2.resize(img, (96, 96), interpolation=cv2.INTER_NEAREST)
        ok, buf = cv2.imencode(".jpg", img)
        return buf.tobytes() if ok else None

    def close(self) -> None:
        self.embedder.close()


def _product_name(product: Any) -> str:
    """A shopper's name for a catalog product: brand and category ("Lumen Ankle boot")."""
    brand = product.attributes.get("brand", "")
    return f"{brand} {product.category}".strip() if product.category else (brand or product.id)


def make_handler(kiosk: Kiosk) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "ShopLensKiosk/1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the page polls often
            pass

        def _send(self, code: int, body: bytes, ctype: str, cache: str = "no-store") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", cache)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._send(200, PAGE.encode("utf-8"), "text/html; charset=utf-8")
            elif path == "/api/result":
                self._send(200, json.dumps(kiosk.snapshot()).encode(), "application/json")
            elif path == "/healthz":
                ok, doc = kiosk.health()
                self._send(200 if ok else HTTPStatus.SERVICE_UNAVAILABLE, json.dumps(doc).encode(),
                           "application/json")  # fmt: skip
            elif path == "/frame.jpg":
                with kiosk.lock:
                    jpeg = kiosk.jpeg
                if jpeg is None:
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no frame yet", "text/plain")
                else:
                    self._send(200, jpeg, "image/jpeg")
            elif path == "/stream.mjpg":
                self._mjpeg()
            elif path.startswith("/thumb/") and kiosk.search is not None and path[7:].isdigit():
                img = kiosk.search.thumbnail(int(path[7:]))
                if img is None:
                    self._send(404, b"no such product", "text/plain")
                else:
                    self._send(200, img, "image/jpeg", "max-age=3600")  # a product's picture does not change
            else:
                self._send(404, b"not found", "text/plain")

        def _mjpeg(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            last = None
            try:
                while not kiosk.stop.is_set():
                    with kiosk.lock:
                        jpeg = kiosk.jpeg
                    if jpeg is not None and jpeg is not last:
                        head = b"--frame\r\nContent-Type: image/jpeg\r\n"
                        head += b"Content-Length: %d\r\n\r\n" % len(jpeg)
                        self.wfile.write(head + jpeg + b"\r\n")
                        last = jpeg
                    kiosk.stop.wait(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="ShopLens kiosk sample app")
    ap.add_argument("--source", default=str(DEFAULT_VIDEO), help="camera index (e.g. 0) or a video file")
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="classifier .tflite (from 'make demo')")
    ap.add_argument("--index", default=None, help="catalog index for similar products (shoplens index build)")
    ap.add_argument("--embedding", default=None, help="embedding .tflite (default: beside --model)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpu-kernels", choices=("xnnpack", "builtin", "auto"), default="auto",
                    help="CPU kernels: auto times XNNPACK and LiteRT's own at start and keeps the faster "
                         "(docs/sdk.md)")  # fmt: skip
    ap.add_argument("--headless", action="store_true", help="JSON lines on stdout instead of the page")
    ap.add_argument("--once", action="store_true", help="stop at the end of a video instead of looping")
    ap.add_argument("--no-colour", action="store_true", help="do not name the product's colours")
    ap.add_argument("--confident", type=float, default=0.85,
                    help="lowest smoothed score shown as an answer (below: 'not sure'; chosen on data, "
                         "python -m benchmarks.kiosk_confidence)")  # fmt: skip
    from shoplens.open_set import REFERENCE

    ap.add_argument("--min-score", type=float, default=REFERENCE.min_score,
                    help="under this smoothed score: 'no product recognised' (the SDK's open-set threshold, "
                         "calibrated for the reference model; docs/sdk.md; negative: off)")  # fmt: skip
    ap.add_argument("--fast", action="store_true", help="do not pace a video at its frame rate")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 0.0 <= args.confident <= 1.0:
        sys.stderr.write(f"error: --confident must be in [0, 1], got {args.confident}\n")
        return 2
    if args.min_score > 1.0:
        sys.stderr.write(f"error: --min-score must be at most 1 (negative: off), got {args.min_score}\n")
        return 2
    if not Path(args.model).is_file():
        sys.stderr.write(f"error: model {args.model} does not exist; run 'make demo' first or pass --model\n")
        return 2
    if not args.source.isdigit() and not Path(args.source).is_file():
        sys.stderr.write(f"error: video {args.source} does not exist; run 'make demo' or pass --source\n")
        return 2
    from shoplens import ShopLensError

    try:
        kiosk = Kiosk(args)
    except ShopLensError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return exc.exit_code
    server = None
    if not args.headless:
        server = ThreadingHTTPServer((args.host, args.port), make_handler(kiosk))
        server.daemon_threads = True
        host, port = server.server_address[:2]
        sys.stderr.write(f"kiosk page on http://{host}:{port}/ (Ctrl-C to stop)\n")
        sys.stderr.flush()
        threading.Thread(target=server.serve_forever, name="http", daemon=True).start()

    def shutdown(signum: int, _frame: Any) -> None:
        kiosk.stop.set()

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)
    capture = threading.Thread(target=kiosk.run_capture, name="capture", daemon=True)
    capture.start()
    while capture.is_alive() and not kiosk.stop.is_set():
        kiosk.stop.wait(0.2)
    kiosk.stop.set()
    capture.join(timeout=5)
    if server is not None:
        server.shutdown()
        server.server_close()
    stats = kiosk.clf.stream_stats.to_dict()
    kiosk.close()
    sys.stderr.write(f"kiosk stopped: {kiosk.frames_read} frames read, stream {stats}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
