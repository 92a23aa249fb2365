"""``shoplens inspect``: what a .tflite model declares, read without running it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shoplens.cli._common import JsonFlag, out_console, print_json

app = typer.Typer()


@app.command("inspect")
def inspect_command(
    model: Annotated[Path, typer.Argument(help="A .tflite model.")],
    json_out: JsonFlag = False,
) -> None:
    """Show inputs, outputs, quantization, metadata, the contract, the op histogram and Edge TPU status.

    Example: shoplens inspect out/int8/model.tflite --json
    """
    from shoplens.tflite_model import read_model_info

    info = read_model_info(model)
    meta = info.shoplens_metadata
    doc = info.to_dict()
    doc["model"] = str(model)
    doc["shoplens"] = meta
    doc["compiled_for_edgetpu"] = info.has_edgetpu_op
    if json_out:
        print_json(doc)
        return
    c = out_console
    c.print(f"[bold]{model}[/bold]  {info.size:,} bytes, {len(info.ops)} ops, schema v{info.version}")
    for kind, tensors in (("input", info.inputs), ("output", info.outputs)):
        for t in tensors:
            q = f" scale={t.scales[0]:.6g} zero_point={t.zero_points[0]}" if len(t.scales) == 1 else ""
            dyn = f" (signature {list(t.shape_signature)})" if t.dynamic else ""
            c.print(f"  {kind:<6} {t.name}: {t.dtype}{list(t.shape)}{dyn}{q}")
    if meta:
        from shoplens.contract import PreprocessContract

        contract = PreprocessContract.from_dict(meta["contract"]) if "contract" in meta else None
        c.print(f"  contract: {contract.describe() if contract else 'none'}")
        labels = meta.get("labels") or []
        c.print(f"  labels ({len(labels)}): {', '.join(labels[:12])}{' ...' if len(labels) > 12 else ''}")
        c.print(f"  output: {meta.get('output', 'probabilities')}")
    else:
        c.print("  no ShopLens metadata (pass a contract and labels to the SDK explicitly)")
    if info.metadata:
        c.print(f"  metadata entries: {', '.join(sorted(info.metadata))}")
    if info.associated_files:
        c.print(f"  associated files: {', '.join(sorted(info.associated_files))}")
    c.print("  ops: " + ", ".join(f"{k} x{v}" for k, v in info.op_histogram.items()))
    c.print(f"  compiled for the Edge TPU: {'yes (edgetpu-custom-op)' if info.has_edgetpu_op else 'no'}")
