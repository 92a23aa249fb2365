"""``shoplens edgetpu check|compile``: the Edge TPU pre-flight and the compiler, on any .tflite."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from shoplens.cli._common import JsonFlag, out_console, print_json

app = typer.Typer(help="Edge TPU: pre-flight mapping report and compilation.", no_args_is_help=True)


def _print_preflight(pf_dict: dict[str, Any], verbose: bool) -> None:
    """The verdict and the fix first; the op table after (all ops with --all, else those off the TPU)."""
    out_console.print(pf_dict["summary"])
    for extra in pf_dict["model_errors"][1:]:
        out_console.print(f"also: {extra}")
    off = [o for o in pf_dict["ops"] if not o["maps"]]
    if not verbose and (pf_dict["model_errors"] or not off):
        if pf_dict["ops"]:
            out_console.print(f"({len(pf_dict['ops'])} ops; --all lists them)")
        return
    t = Table(title=f"Edge TPU pre-flight: {pf_dict['model']}")
    for col in ("#", "op", "v", "verdict", "MACs", "reason"):
        t.add_column(col, justify="right" if col in ("#", "v", "MACs") else "left")
    seg = pf_dict["segment_end"]
    shown = 0
    for o in pf_dict["ops"]:
        if not verbose and ((o["maps"] and seg is not None and o["index"] < seg - 3) or shown >= 20):
            continue
        shown += 1
        verdict = "[green]Edge TPU[/green]" if o["maps"] else f"[red]CPU: {o['category']}[/red]"
        t.add_row(str(o["index"]), o["op"], str(o["version"]), verdict, f"{o['macs']:,}",
                  o.get("reason") or o.get("note", ""))  # fmt: skip
        if seg is not None and o["index"] == seg - 1:
            t.add_row("", "[bold]-- TPU segment ends --[/bold]", "", "", "", "")
    out_console.print(t)
    if not verbose and len(off) > shown:
        out_console.print(f"({len(pf_dict['ops'])} ops; --all lists them)")


@app.command("check")
def check_command(
    model: Annotated[Path, typer.Argument(help="A .tflite model.")],
    require_full: Annotated[
        bool, typer.Option("--require-full", help="Exit 1 unless every op maps to the Edge TPU.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--all", help="List every op (default: the ones that matter).")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Predict, op by op in execution order, what the Edge TPU compiler maps and why not.

    Example: shoplens edgetpu check out/edgetpu/model.tflite --all
    """
    from shoplens.edgetpu import preflight
    from shoplens.errors import ConversionError

    pf = preflight(model)
    d = pf.to_dict()
    if json_out:
        print_json(d)
    else:
        _print_preflight(d, verbose)
    if require_full and not pf.fully_mapped:
        raise ConversionError(f"not fully mapped: {pf.summary()}")


@app.command("compile")
def compile_command(
    model: Annotated[Path, typer.Argument(help="A full-integer .tflite model.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for <name>_edgetpu.tflite and the log.")
    ],
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds before the compiler is stopped.")
    ] = 180,
    json_out: JsonFlag = False,
) -> None:
    """Pre-flight, then run edgetpu_compiler (when installed) and parse its report.

    Example: shoplens edgetpu compile out/edgetpu/model.tflite --out out/edgetpu
    """
    from shoplens.edgetpu import compile_for_edgetpu, preflight

    pf = preflight(model)
    res = compile_for_edgetpu(model, out, timeout_s=timeout)
    if json_out:
        print_json({"preflight": pf.to_dict(), "compiler": res.to_dict()})
        return
    out_console.print(f"pre-flight: {pf.summary()}")
    out_console.print(f"compiled {res.output} (edgetpu_compiler {res.compiler_version}): "
                      f"{res.ops_on_tpu} ops on "
                      f"the Edge TPU, {res.ops_on_cpu} on the CPU; on-chip {res.on_chip_memory}, "
                      f"off-chip {res.off_chip_memory}")  # fmt: skip
