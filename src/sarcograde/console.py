"""Terminal output shared by the stages: a rich console and a progress bar factory.

`warn` and `info` print one line each. Inside `recorded()` (a Ray task: the worker's output does
not reach the user's terminal) they are kept instead, to be `replay`ed on the driver's console.
"""

from __future__ import annotations

import itertools
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

# Off a terminal (a log file, a pipe, a test) rich would hard-wrap at 80 columns and split one
# message over several lines; there every message stays on its own single line.
console = Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())


def progress(transient: bool = False) -> Progress:
    """A progress bar with count, elapsed time and ETA; quiet when stderr is not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not sys.stderr.isatty(),
    )


Line = tuple[str, str]  # ("warn" or "info", message)

_lock = threading.Lock()
_recording: list[Line] | None = None  # this process's lines go here instead while recorded()
_serial = itertools.count(1)
_shown: dict[Line, int] = {}          # each line printed: the serial of its last printing


def warn(message: str) -> None:
    _emit(("warn", message))


def info(message: str) -> None:
    _emit(("info", message))


def _emit(line: Line) -> None:
    with _lock:
        if _recording is not None:
            _recording.append(line)
            return
        _shown[line] = next(_serial)
    kind, message = line
    if kind == "warn":
        console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)  # one line
    else:
        console.print(message)


@contextmanager
def recorded() -> Iterator[list[Line]]:
    """Keep this process's `warn` and `info` lines (every thread's) in the list yielded, in
    order, instead of printing them."""
    global _recording
    lines: list[Line] = []
    with _lock:
        outer, _recording = _recording, lines
    try:
        yield lines
    finally:
        with _lock:
            _recording = outer
        if outer is not None:
            outer.extend(lines)


def mark() -> int:
    """A point in this process's output, for `replay(..., since=mark)`."""
    with _lock:
        return next(_serial)


def replay(lines: list[Line], since: int | None = None) -> None:
    """Print `lines` recorded elsewhere as `warn` and `info` would have; with `since` (a `mark`),
    those already printed after that mark are left out (a message every task repeats, or one
    the driver printed itself)."""
    with _lock:
        shown = {line for line in lines if since is not None and _shown.get(line, 0) > since}
    for line in lines:
        if line not in shown:
            _emit(line)
