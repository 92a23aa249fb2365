"""Entry point of the ``shoplens`` CLI.

Each command lives in its own module with its own ``typer.Typer()`` and is composed here with
``add_typer``. Errors are mapped to a one-line message on stderr and an exit code in ONE place,
:func:`main`. Commands that need TensorFlow import the converter inside the command body.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
from typer.exceptions import Abort, Exit, TyperException

from shoplens._version import __version__
from shoplens.cli import (
    bundle_cmd,
    classify_cmd,
    convert_cmd,
    data_cmd,
    drift_cmd,
    edgetpu_cmd,
    eval_cmd,
    inspect_cmd,
    search_cmd,
)
from shoplens.errors import ShopLensError

app = typer.Typer(
    name="shoplens",
    help="On-device product recognition: convert, check, bundle, classify and benchmark TFLite models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shoplens {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details to stderr.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


app.add_typer(data_cmd.app, name="data")
app.add_typer(convert_cmd.app)
app.add_typer(bundle_cmd.app)
app.add_typer(eval_cmd.app)
app.add_typer(drift_cmd.app)
app.add_typer(edgetpu_cmd.app, name="edgetpu")
app.add_typer(search_cmd.index_app, name="index")
app.add_typer(search_cmd.search_app)
app.add_typer(classify_cmd.app)
app.add_typer(inspect_cmd.app)


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


EXIT_CODES = "Exit codes: 0 done; 1 a check or gate failed; 2 bad input or usage; 130 interrupted."


def build_command() -> Any:
    """The click command behind ``app``, with help that reads as a user expects: boolean flags
    show no "<bool>" value, and every command lists the exit codes."""
    root = typer.main.get_command(app)
    todo = [root]
    while todo:
        cmd = todo.pop()
        todo.extend(getattr(cmd, "commands", {}).values())
        cmd.epilog = EXIT_CODES
        for param in cmd.params:
            _flag_without_value(param)
        cmd.get_help_option = _help_option(cmd.get_help_option)  # type: ignore[method-assign,assignment]
    return root


def _flag_without_value(param: Any) -> Any:
    if param is not None and getattr(param, "is_flag", False) and not getattr(param, "count", False):
        param.metavar = ""  # typer 0.29 shows a flag's type ("<bool>") as if it took a value
    return param


def _help_option(make: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda ctx: _flag_without_value(make(ctx))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (also used by the console script)."""
    command = build_command()
    try:
        with _sigint_seen() as seen:
            try:
                rv = command.main(args=argv, prog_name="shoplens", standalone_mode=False)
            except BaseException:
                # Ctrl-C inside native code (TensorFlow, TFMOT) can surface as another exception
                # (SystemError, TypeError) that a stage then reports as its own failure
                if seen():
                    raise KeyboardInterrupt from None
                raise
    except ShopLensError as exc:
        _err(f"error: {_one_line(exc.message)}")
        return exc.exit_code
    except Abort:
        _err("aborted")
        return 130
    except KeyboardInterrupt:
        _err("interrupted; nothing was written (ShopLens writes its outputs atomically)")
        return 130
    except Exit as exc:
        if exc.exit_code == 130 and isinstance(exc.__cause__, KeyboardInterrupt):  # typer's Ctrl-C
            _err("interrupted; nothing was written (ShopLens writes its outputs atomically)")
        return int(exc.exit_code or 0)
    except SystemExit as exc:
        if _broken_pipe(exc.__context__):  # typer's own EPIPE handling exits 1; a closed pipe is fine
            _silence_stdout()
            return 0
        raise
    except TyperException as exc:
        # usage errors: bad option, missing argument, failed typer validation
        _err(f"error: {_one_line(exc.format_message())}")
        ctx = getattr(exc, "ctx", None)
        if ctx is not None and exc.exit_code == 2:
            _err(f"try '{ctx.command_path} --help'")
        return int(exc.exit_code)
    except BrokenPipeError:
        _silence_stdout()
        return 0
    if rv == 130:  # typer turns Ctrl-C into the return value 130 (no command of ours returns it)
        _err("interrupted; nothing was written (ShopLens writes its outputs atomically)")
    return int(rv) if isinstance(rv, int) else 0


@contextlib.contextmanager
def _sigint_seen() -> Iterator[Callable[[], bool]]:
    """Note a Ctrl-C (then raise KeyboardInterrupt as Python does); yields "was there one?"."""
    seen = [False]

    def on_sigint(signum: int, frame: object) -> None:
        seen[0] = True
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread (an embedding application): leave its handler alone
        yield lambda: False
        return
    try:
        yield lambda: seen[0]
    finally:
        signal.signal(signal.SIGINT, previous)


def _broken_pipe(exc: BaseException | None) -> bool:
    import errno

    return isinstance(exc, OSError) and exc.errno == errno.EPIPE


def _silence_stdout() -> None:
    """The reader went away (``| head``): point stdout at /dev/null so the final flush is quiet."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def entry() -> None:  # pragma: no cover - thin wrapper for console_scripts and python -m
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
