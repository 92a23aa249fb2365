"""``shoplens data``: inspect data specs and generate kiosk frames."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from shoplens.cli._common import JsonFlag, OverwriteFlag, out_console, print_json, show_progress

app = typer.Typer(help="Inspect datasets and generate kiosk camera frames.", no_args_is_help=True)


@app.command("info")
def info(
    spec: Annotated[str, typer.Argument(help="Data spec (see 'shoplens data --help').")],
    json_out: JsonFlag = False,
) -> None:
    """Count the images and classes a data spec names (data specs: docs/data.md).

    Example: shoplens data info kiosk:out/demo/kiosk
    """
    from shoplens.data.spec import open_dataset

    ds = open_dataset(spec)
    counts = np.zeros(len(ds.label_names), np.int64)
    n = 0
    for batch in ds.batches(256):
        np.add.at(counts, batch.labels, 1)
        n += len(batch)
    result: dict[str, Any] = {
        "spec": spec,
        "name": ds.name,
        "images": n,
        "skipped": ds.skipped,
        "classes": {name: int(c) for name, c in zip(ds.label_names, counts, strict=True)},
    }
    if json_out:
        print_json(result)
        return
    out_console.print(
        f"[bold]{ds.name}[/bold]: {n} images, {len(ds.label_names)} classes, {ds.skipped} skipped"
    )
    for name, c in result["classes"].items():
        out_console.print(f"  {name:<20} {c}")


@app.command("kiosk")
def kiosk(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for frames and ground truth.")],
    source: Annotated[
        str, typer.Option("--source", help="Data spec of the product images.")
    ] = "fashion-mnist:test",
    frames: Annotated[int, typer.Option("--frames", "-n", min=1, help="Number of frames.")] = 200,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed; the same seed gives the same frames.")
    ] = 0,
    bad_fraction: Annotated[
        float, typer.Option("--bad-fraction", min=0.0, max=1.0, help="Share of deliberately bad frames.")
    ] = 0.1,
    video: Annotated[
        bool, typer.Option("--video", help="Write one MJPG video instead of JPEG files.")
    ] = False,
    fps: Annotated[float, typer.Option("--fps", min=1.0, help="Video frame rate.")] = 15.0,
    segment: Annotated[int, typer.Option("--segment", min=1, help="Video frames per product.")] = 30,
    width: Annotated[int, typer.Option("--width", min=16, help="Frame width.")] = 640,
    height: Annotated[int, typer.Option("--height", min=16, help="Frame height.")] = 480,
    overwrite: OverwriteFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Render reproducible 640x480 BGR kiosk frames (or a video) with a ground-truth CSV.

    Example: shoplens data kiosk --out out/kiosk --frames 300 --video
    """
    from shoplens.data.kiosk import KioskConfig, generate_kiosk
    from shoplens.data.spec import open_dataset

    ds = open_dataset(source)
    products: list[np.ndarray] = []
    labels: list[int] = []
    for batch in ds.batches(512):
        products.extend(batch.images)
        labels.extend(batch.labels.tolist())
    cfg = KioskConfig(width=width, height=height, bad_fraction=bad_fraction)
    infos = generate_kiosk(
        out,
        products,
        labels,
        ds.label_names,
        n_frames=frames,
        seed=seed,
        config=cfg,
        video=video,
        fps=fps,
        segment_frames=segment,
        overwrite=overwrite,
        source=source,
        progress=show_progress(json_out),
    )
    bad: dict[str, int] = {}
    for f in infos:
        if f.bad_reason:
            bad[f.bad_reason] = bad.get(f.bad_reason, 0) + 1
    summary = {"out": str(out), "frames": len(infos), "bad": bad, "video": video, "seed": seed}
    if json_out:
        print_json(summary)
    else:
        kind = "video frames" if video else "frames"
        out_console.print(
            f"wrote {len(infos)} kiosk {kind} to {out} ({sum(bad.values())} deliberately bad: {bad})"
        )


@app.command("catalog")
def catalog(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for images/ and products.csv.")],
    count: Annotated[int, typer.Option("--count", min=1, help="Products to write.")] = 1000,
    split: Annotated[str, typer.Option("--split", help="Fashion-MNIST split: train or test.")] = "train",
    seed: Annotated[int, typer.Option("--seed", help="Seed for ids, brands and prices.")] = 11,
    overwrite: OverwriteFlag = False,
    colours: Annotated[
        bool, typer.Option("--colours", help="Paint the products in palette colours (a colour column too).")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Generate a demo product catalog (images + products.csv) from Fashion-MNIST.

    Example: shoplens data catalog --out out/catalog --count 2000 --colours
    """
    from shoplens.data.catalog_gen import generate_catalog

    res = generate_catalog(out, count=count, split=split, seed=seed, overwrite=overwrite,
                           show_progress=show_progress(json_out), colours=colours)  # fmt: skip
    if json_out:
        print_json(res)
    else:
        out_console.print(f"wrote {res['products']} products to {out} (products.csv, images/)")
