"""A tiny progress-bar wrapper: rich when enabled, a no-op otherwise."""

from __future__ import annotations

from typing import Any

__all__ = ["progress"]


class _Bar:
    def __init__(self, enabled: bool, description: str, total: int | None) -> None:
        self._p: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._p = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
                console=Console(stderr=True, emoji=False),  # stdout stays clean for --json
            )
            self._p.start()
            self._task = self._p.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(enabled: bool, description: str, total: int | None = None) -> _Bar:
    """Return a bar with ``advance(n)`` and ``close()``; shown only when ``enabled``."""
    return _Bar(enabled, description, total)
