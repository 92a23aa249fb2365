"""``shoplens bundle``: a device bundle (model, golden frames, expected tensors and scores)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shoplens.cli._common import JsonFlag, OverwriteFlag, out_console, print_json

app = typer.Typer()


@app.command("bundle")
def bundle_command(
    model: Annotated[Path, typer.Argument(help="A .tflite model with ShopLens or standard metadata.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")],
    frames: Annotated[int, typer.Option("--frames", min=1, max=1000, help="Golden frames.")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the kiosk frame generator.")] = 2026,
    overwrite: OverwriteFlag = False,
    sign_key: Annotated[
        Path | None, typer.Option("--sign-key", help="Ed25519 private key (PEM): write manifest.sig.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Write golden frames with the input tensors and scores computed here, for on-device checks.

    Example: shoplens bundle out/int8/model.tflite --out out/bundle --frames 32
    """
    from shoplens.bundle_writer import write_bundle

    manifest = write_bundle(model, out, frames=frames, seed=seed, overwrite=overwrite, signing_key=sign_key)
    if json_out:
        print_json(manifest)
    else:
        out_console.print(f"wrote a bundle of {manifest['frames']} golden frames to {out} "
                          f"({len(manifest['files'])} files, sha256 in manifest.json)")  # fmt: skip
