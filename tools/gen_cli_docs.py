"""Generate docs/cli_reference.md from the typer app, so the reference cannot drift from the CLI.

.venv/bin/python tools/gen_cli_docs.py            # rewrite docs/cli_reference.md
.venv/bin/python tools/gen_cli_docs.py --check    # exit 1 if the file is out of date (a test runs this)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from shoplens.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "cli_reference.md"


def _is_group(cmd: Any) -> bool:
    return isinstance(getattr(cmd, "commands", None), dict)


def _walk(cmd: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    """Every command under ``cmd`` (typer vendors click; duck-typed to stay off its private API)."""
    out = [(path, cmd)]
    if _is_group(cmd):
        for name in sorted(cmd.commands):
            out += _walk(cmd.commands[name], [*path, name])
    return out


def _param_row(p: Any) -> str:
    if p.param_type_name == "option":
        names = ", ".join(f"`{o}`" for o in (*p.opts, *p.secondary_opts))
        kind = "flag" if p.is_flag else "value"
        default = (
            ""
            if p.is_flag or p.default in (None, ()) or callable(p.default)
            else f" (default: `{getattr(p.default, 'value', p.default)}`)"  # an Enum choice: its value
        )
        req = " **required**" if p.required else ""
        return f"| {names} | {kind} | {(p.help or '').strip()}{default}{req} |"
    return f"| `{p.name.upper()}` | argument | {'required' if p.required else 'optional'} |"


def render() -> str:
    root = typer.main.get_command(app)
    lines = [
        "# CLI reference",
        "",
        "Generated from the `shoplens` command by `tools/gen_cli_docs.py`; a test fails when it is out "
        "of date. Task-oriented pages: [cli.md](cli.md).",
    ]
    for path, cmd in _walk(root, ["shoplens"]):
        if _is_group(cmd) and path != ["shoplens"]:
            lines += ["", f"## `{' '.join(path)}`", "", (cmd.help or "").strip().splitlines()[0]]
            continue
        if path == ["shoplens"]:
            continue
        args = " ".join(p.name.upper() for p in cmd.params if p.param_type_name == "argument")
        lines += ["", f"## `{' '.join(path)}{' ' + args if args else ''}`", ""]
        lines.append((cmd.help or "").strip().splitlines()[0] if cmd.help else "")
        rows = [_param_row(p) for p in cmd.params if p.name != "help"]
        if rows:
            lines += ["", "| option | takes | meaning |", "| --- | --- | --- |", *rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            sys.stderr.write("docs/cli_reference.md is out of date: run tools/gen_cli_docs.py\n")
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
