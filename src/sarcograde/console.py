"""Terminal output shared by the stages: a rich console and a progress bar factory."""

from __future__ import annotations

import sys

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


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)  # one line, any width


def info(message: str) -> None:
    console.print(message)
