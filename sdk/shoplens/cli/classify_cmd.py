"""``shoplens classify``: stream classifications of images, a folder, a video or a camera."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from shoplens.cli._common import JsonFlag, ModelPath, err_console, out_console, show_progress
from shoplens.open_set import REFERENCE
from shoplens.quality import QualityPolicy
from shoplens.runtime import CpuKernels, Delegate

app = typer.Typer()


@app.command("classify")
def classify_command(
    model: ModelPath,
    source: Annotated[
        Path | None, typer.Argument(help="An image, a folder of images or a video file.")
    ] = None,
    camera: Annotated[int | None, typer.Option("--camera", min=0, help="Read from camera N instead.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Categories per frame.")] = 3,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Interpreter threads.")] = 1,
    delegate: Annotated[Delegate, typer.Option("--delegate", help="Where the model runs.")] = Delegate.CPU,
    fallback_to_cpu: Annotated[
        bool, typer.Option("--fallback-to-cpu", help="Run on the CPU when the Edge TPU is missing.")
    ] = False,
    cpu_kernels: Annotated[
        CpuKernels,
        typer.Option("--cpu-kernels", help="XNNPACK, LiteRT's own, or auto: the faster on this model "
                     "(large depthwise kernels: NASNet, ConvNeXt)."),
    ] = CpuKernels.XNNPACK,
    quality: Annotated[
        QualityPolicy, typer.Option("--quality", help="Quality gate: off, warn (mark) or reject (re-take).")
    ] = QualityPolicy.OFF,
    smooth: Annotated[bool, typer.Option("--smooth", help="Temporal smoothing (video and camera).")] = False,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="labels.txt overriding the model's.")
    ] = None,
    contract: Annotated[
        Path | None, typer.Option("--contract", help="Contract JSON for a model without ShopLens metadata.")
    ] = None,
    colour: Annotated[
        bool, typer.Option("--colour", "--color", help="Also name the product's colours (docs/sdk.md).")
    ] = False,
    white_balance: Annotated[
        str | None,
        typer.Option("--white-balance", help="With --colour: 'auto' (video and camera), or B,G,R gains."),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option("--min-score", help="'No product recognised' under this top-1 probability "
                     f"({REFERENCE.min_score} is calibrated for the reference model; docs/sdk.md)."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Classify an image, every image in a folder, a video, or a live camera.

    With --json, one JSON object per frame (JSON lines) and a summary line. Unreadable or invalid
    images in a folder are skipped, counted and named; a single unreadable image is an error.

    Example: shoplens classify out/int8/model.tflite out/kiosk/frames --quality reject --colour
    """
    from shoplens.classifier import Classifier
    from shoplens.colour import ColourOptions
    from shoplens.contract import PreprocessContract
    from shoplens.errors import InvalidFrameError
    from shoplens.internal.progress import progress
    from shoplens.open_set import OpenSetOptions
    from shoplens.options import BaseOptions, ClassifierOptions, ImageClassifierOptions, RunningMode
    from shoplens.quality import QualityOptions
    from shoplens.sources import VIDEO_EXTENSIONS, open_source

    if white_balance is not None and not colour:
        from shoplens.errors import UsageError

        raise UsageError("--white-balance goes with --colour")
    streaming = camera is not None or (source is not None and source.suffix.lower() in VIDEO_EXTENSIONS)
    video_mode = smooth and streaming
    base = BaseOptions(model_asset_path=model, num_threads=threads, delegate=delegate,
                       fallback_to_cpu=fallback_to_cpu, cpu_kernels=cpu_kernels)  # fmt: skip
    opts = ImageClassifierOptions(
        base,
        running_mode=RunningMode.VIDEO if video_mode else RunningMode.IMAGE,
        classifier_options=ClassifierOptions(max_results=top_k),
        quality=QualityOptions(policy=quality),
        labels_path=labels,
        contract=PreprocessContract.load(contract) if contract else None,
        colour=ColourOptions(enabled=colour, white_balance=_gains(white_balance)),
        open_set=OpenSetOptions(min_score=min_score),
    )
    counts = {"frames": 0, "classified": 0, "rejected": 0, "unreadable": 0, "invalid": 0, "not_a_product": 0}
    t0 = time.perf_counter()
    clf = Classifier(opts)  # options and model are checked before any input is opened
    if cpu_kernels is CpuKernels.AUTO and not json_out:
        timed = ", ".join(f"{k} {v:.2f} ms" for k, v in clf.kernel_ms.items())
        err_console.print(f"cpu kernels: auto chose {clf.cpu_kernels} ({timed or 'not timed: Edge TPU'})")
    try:
        src = open_source(source, camera=camera)
    except BaseException:
        clf.close()
        raise

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")

    with src, clf, progress(show_progress(json_out) and src.streaming, "classifying", src.total) as bar:
        for frame in src:
            counts["frames"] += 1
            bar.advance()
            if frame.image is None:
                counts["unreadable"] += 1
                _skip(json_out, frame.name, "unreadable (corrupt, truncated or not an image)", emit)
                continue
            try:
                if video_mode:
                    result = clf.classify_for_video(frame.image, frame.timestamp_ms)
                else:
                    result = clf.classify(frame.image)
            except InvalidFrameError as exc:
                if src.kind == "image":
                    raise
                counts["invalid"] += 1
                _skip(json_out, frame.name, exc.message, emit)
                continue
            counts["rejected" if result.rejected else "classified"] += 1
            counts["not_a_product"] += result.is_product is False
            if json_out:
                emit({"source": frame.name, **result.to_dict()})
            elif not src.streaming or frame.index % 30 == 0:
                if result.rejected:
                    out_console.print(f"{frame.name}: re-take ({result.quality.hint})")
                elif result.is_product is False:
                    top = f" (best guess {result.top.label} {result.top.score:.2f})" if result.top else ""
                    out_console.print(f"{frame.name}: no product recognised{top}")
                else:
                    cats = ", ".join(f"{c.label} {c.score:.2f}" for c in result.categories)
                    if result.colours:
                        cats += " | " + ", ".join(f"{c.name} {c.share:.0%}" for c in result.colours)
                    out_console.print(f"{frame.name}: {cats}")
    for w in src.warnings:
        err_console.print(f"warning: {w}")
    elapsed = time.perf_counter() - t0
    fps = counts["frames"] / elapsed if elapsed > 0 else 0.0
    summary = {**counts, "seconds": round(elapsed, 3), "fps": round(fps, 1), "warnings": src.warnings,
               "cpu_kernels": clf.cpu_kernels}
    if src.fps is not None:
        summary["video_fps"] = round(src.fps, 3)
    if json_out:
        emit({"summary": summary})
    elif src.streaming or counts["frames"] > 1:
        out_console.print(
            f"{counts['frames']} frames in {elapsed:.2f} s ({fps:.1f} fps): "
            f"{counts['classified']} classified, {counts['rejected']} rejected by the quality gate, "
            f"{counts['unreadable']} unreadable, {counts['invalid']} invalid"
            + (f", {counts['not_a_product']} not a product" if min_score is not None else "")
        )
    if counts["frames"] and not counts["classified"] + counts["rejected"]:
        from shoplens.errors import DataError

        raise DataError(f"no readable frame in {source}: all {counts['frames']} were skipped")


def _gains(value: str | None) -> str | tuple[float, float, float] | None:
    from shoplens.errors import UsageError

    if value is None or value == "auto":
        return value
    try:
        b, g, r = (float(x) for x in value.split(","))
    except ValueError:
        raise UsageError(f"--white-balance takes 'auto' or three gains B,G,R, got {value!r}") from None
    return (b, g, r)


def _skip(json_out: bool, name: str, why: str, emit: Any) -> None:
    if json_out:
        emit({"source": name, "error": why})
    else:
        err_console.print(f"{name}: {why}; skipped")
