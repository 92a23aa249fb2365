"""``shoplens classify``: stream classifications of images, a folder, a video or a camera."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from shoplens.cli._common import err_console, out_console, show_progress
from shoplens.errors import DataError, UsageError

app = typer.Typer()

VIDEO_EXTENSIONS = {".avi", ".mp4", ".mkv", ".mov", ".webm", ".mjpg", ".mjpeg"}


def _frames(
    source: Path | None, camera: int | None
) -> tuple[Iterator[tuple[str, np.ndarray | None]], int | None]:
    """(name, frame) pairs and the frame count when known. A failed read yields None."""
    import cv2

    from shoplens.data.datasets import IMAGE_EXTENSIONS, read_image

    if camera is not None:
        from shoplens._quiet import quiet_native_stderr

        with quiet_native_stderr():  # OpenCV logs every back end it tries
            cap = cv2.VideoCapture(camera)
        if not cap.isOpened():
            raise DataError(f"cannot open camera {camera}; check that it is connected and not in use")
        return _capture(cap, f"camera{camera}"), None
    if source is None:
        raise UsageError("give an IMAGE, a DIR or a VIDEO, or --camera N")
    if not source.exists():
        raise DataError(f"{source} does not exist")
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"{source} holds no images (jpg, png, bmp, webp)")
        return ((str(p), read_image(p)) for p in files), len(files)
    if source.suffix.lower() in VIDEO_EXTENSIONS:
        cap = cv2.VideoCapture(str(source))
        if not cap.isOpened():
            raise DataError(f"cannot open video {source}")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        return _capture(cap, source.name, stop_on_end=True), n
    return iter([(str(source), read_image(source))]), 1


def _capture(cap: Any, name: str, stop_on_end: bool = False) -> Iterator[tuple[str, np.ndarray | None]]:
    i = 0
    misses = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                if stop_on_end or misses > 30:
                    return
                misses += 1
                yield f"{name}#{i}", None
                continue
            misses = 0
            yield f"{name}#{i}", frame
            i += 1
    finally:
        cap.release()


@app.command("classify")
def classify_command(
    model: Annotated[Path, typer.Argument(help="A .tflite model.")],
    source: Annotated[
        Path | None, typer.Argument(help="An image, a folder of images or a video file.")
    ] = None,
    camera: Annotated[int | None, typer.Option("--camera", min=0, help="Read from camera N instead.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Categories per frame.")] = 3,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Interpreter threads.")] = 1,
    delegate: Annotated[str, typer.Option("--delegate", help="cpu or edgetpu.")] = "cpu",
    quality: Annotated[str, typer.Option("--quality", help="Quality gate: off, warn or reject.")] = "off",
    smooth: Annotated[bool, typer.Option("--smooth", help="Temporal smoothing (video and camera).")] = False,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="labels.txt overriding the model's.")
    ] = None,
    contract: Annotated[
        Path | None, typer.Option("--contract", help="Contract JSON for a model without ShopLens metadata.")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per frame (JSON lines).")
    ] = False,
) -> None:
    """Classify an image, every image in a folder, a video, or a live camera."""
    from shoplens.classifier import BaseOptions, Classifier, ClassifierOptions, ImageClassifierOptions
    from shoplens.contract import PreprocessContract
    from shoplens.options import RunningMode
    from shoplens.quality import QualityOptions, QualityPolicy

    streaming = source is None or (source.suffix.lower() in VIDEO_EXTENSIONS)
    mode = "video" if (smooth and streaming) else "image"
    opts = ImageClassifierOptions(
        BaseOptions(model_asset_path=model, num_threads=threads, delegate=delegate),
        classifier_options=ClassifierOptions(max_results=top_k),
        running_mode=RunningMode(mode),
        quality=QualityOptions(policy=QualityPolicy(quality)),
        labels_path=labels,
        contract=PreprocessContract.load(contract) if contract else None,
    )
    counts = {"frames": 0, "classified": 0, "rejected": 0, "unreadable": 0}
    t0 = time.perf_counter()
    from shoplens._progress import progress

    clf = Classifier(opts)  # options and model are checked before any input is opened
    frames, total = _frames(source, camera)
    with clf, progress(show_progress(json_out) and streaming, "classifying", total) as bar:
        for i, (name, frame) in enumerate(frames):
            counts["frames"] += 1
            bar.advance()
            if frame is None:
                counts["unreadable"] += 1
                if json_out:
                    sys.stdout.write(json.dumps({"source": name, "error": "unreadable frame"}) + "\n")
                else:
                    err_console.print(f"{name}: unreadable, skipped")
                continue
            ts = round(i * 1000 / 30)
            result = clf.classify_for_video(frame, ts) if mode == "video" else clf.classify(frame)
            counts["rejected" if result.rejected else "classified"] += 1
            if json_out:
                sys.stdout.write(json.dumps({"source": name, **result.to_dict()}) + "\n")
            elif not streaming or i % 30 == 0:
                if result.rejected:
                    out_console.print(f"{name}: re-take ({result.quality.hint})")
                else:
                    cats = ", ".join(f"{c.label} {c.score:.2f}" for c in result.categories)
                    out_console.print(f"{name}: {cats}")
    elapsed = time.perf_counter() - t0
    fps = counts["frames"] / elapsed if elapsed > 0 else 0.0
    summary = {**counts, "seconds": round(elapsed, 3), "fps": round(fps, 1)}
    if json_out:
        sys.stdout.write(json.dumps({"summary": summary}) + "\n")
    elif streaming or counts["frames"] > 1:
        out_console.print(
            f"{counts['frames']} frames in {elapsed:.2f} s ({fps:.1f} fps): "
            f"{counts['classified']} classified, "
            f"{counts['rejected']} rejected by the quality gate, {counts['unreadable']} unreadable"
        )
