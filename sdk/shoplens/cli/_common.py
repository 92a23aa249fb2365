"""Helpers shared by the command modules: console output, JSON printing, and the option types and
aliases that several commands repeat (one definition each)."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = [
    "DATA_HELP",
    "ExistingPath",
    "FineTuneTargets",
    "IoType",
    "JsonFlag",
    "ModelPath",
    "OverwriteFlag",
    "QuietFlag",
    "Ranges",
    "Target",
    "err_console",
    "out_console",
    "print_json",
    "show_progress",
]

DATA_HELP = (
    "Data spec: fashion-mnist:train|test[:N], a class-per-folder directory, or kiosk:DIR[:good|bad|all] "
    "(see 'shoplens data info --help')."
)


class Target(str, Enum):
    cpu = "cpu"
    edgetpu = "edgetpu"


class FineTuneTargets(str, Enum):
    source = "source"
    labels = "labels"


class Ranges(str, Enum):
    minmax = "minmax"
    mse = "mse"


class IoType(str, Enum):
    uint8 = "uint8"
    int8 = "int8"


JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
OverwriteFlag = Annotated[bool, typer.Option("--overwrite", help="Replace outputs of an earlier run.")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")]
ModelPath = Annotated[Path, typer.Argument(help="A .tflite model.", exists=True, dir_okay=False)]
ExistingPath = Annotated[Path, typer.Argument(exists=True)]

out_console = Console(soft_wrap=True, emoji=False)  # "fashion-mnist:train:50" is no emoji
err_console = Console(stderr=True, soft_wrap=True, emoji=False)


def print_json(obj: Any) -> None:
    """Machine-readable output: one JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def show_progress(json_out: bool, quiet: bool = False) -> bool:
    """Progress bars go to the terminal only, never into --json output."""
    return not (json_out or quiet) and err_console.is_terminal
