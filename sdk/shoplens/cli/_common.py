"""Helpers shared by the command modules: console output and JSON printing."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

__all__ = ["err_console", "out_console", "print_json"]

out_console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def print_json(obj: Any) -> None:
    """Machine-readable output: one JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def show_progress(json_out: bool, quiet: bool = False) -> bool:
    """Progress bars go to the terminal only, never into --json output."""
    return not (json_out or quiet) and err_console.is_terminal
