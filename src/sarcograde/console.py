"""Terminal output shared by the stages: a rich console and a progress bar factory.

`warn` and `info` print one line each. Inside `recorded()` (a Ray task: the worker's output does
not reach the user's terminal) they are kept instead, to be `replay`ed on the driver's console;
a local worker process (`forward_lines`) also sends each to the driver as it is said. A progress
bar is drawn on a terminal only; in a log file (a cluster job's, a pipe) its tasks write plain
lines as they advance instead, and in a worker process nothing (the driver's bar counts tasks).
"""

from __future__ import annotations

import itertools
import sys
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, Task, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

# Off a terminal (a log file, a pipe, a test) rich would hard-wrap at 80 columns and split one
# message over several lines; there every message stays on its own single line.
console = Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())

# Least seconds between two progress lines of one task in a log: a line per patient where
# patients take this long, not thousands of lines for fast ones (nor any for a fast task).
LOG_EVERY_S = 10.0


def on_terminal() -> bool:
    """Whether stderr is a terminal (progress bars) rather than a log file or pipe (lines); a
    worker process whose lines go to the driver (`forward_lines`) speaks in lines."""
    return _forward is None and sys.stderr.isatty()


def progress(transient: bool = False) -> Progress:
    """A progress bar with count, elapsed time and ETA on a terminal; elsewhere `ProgressLines`
    (silent for a `transient` bar, whose progress is not worth keeping in a log, and in a
    worker process, whose driver shows a bar of its tasks)."""
    if not on_terminal():
        return ProgressLines(silent=transient or _forward is not None)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


class ProgressLines(Progress):
    """A progress bar for a log file: nothing is drawn; a task that advances writes a line,
    `description: done/total (elapsed s)`, once `LOG_EVERY_S` seconds have passed since its last
    line (or its start), and one when it completes unless it took less than that in all. A task
    added with `logged=False` writes none (its owner says more in its own lines, as training
    does per epoch)."""

    def __init__(self, silent: bool = False):
        super().__init__(console=console, disable=True)
        self.silent = silent
        self._logged_at: dict[TaskID, float] = {}   # task -> its elapsed seconds at its last line

    def update(self, task_id: TaskID, **changes: Any) -> None:
        before = self._task(task_id).completed
        super().update(task_id, **changes)
        self._log(task_id, before)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        before = self._task(task_id).completed
        super().advance(task_id, advance)
        self._log(task_id, before)

    def reset(self, task_id: TaskID, **changes: Any) -> None:
        super().reset(task_id, **changes)
        self._logged_at.pop(task_id, None)

    def _task(self, task_id: TaskID) -> Task:
        return next(task for task in self.tasks if task.id == task_id)

    def _log(self, task_id: TaskID, before: float) -> None:
        task = self._task(task_id)
        if self.silent or not task.fields.get("logged", True) or task.completed <= before:
            return
        elapsed = task.elapsed or 0.0
        if task.total is not None and task.completed >= task.total:
            due = elapsed >= LOG_EVERY_S   # a slow task's end; a fast one's would be noise
        else:
            due = elapsed - self._logged_at.get(task_id, 0.0) >= LOG_EVERY_S
        if not due:
            return
        self._logged_at[task_id] = elapsed
        total = "" if task.total is None else f"/{task.total:g}"
        console.print(f"{task.description}: {task.completed:g}{total} ({elapsed:.0f} s)",
                      markup=False, soft_wrap=True)


Line = tuple[str, str]  # ("warn" or "info", message)

_lock = threading.Lock()
_recording: list[Line] | None = None  # this process's lines go here instead while recorded()
_forward: Callable[[Line], object] | None = None  # a worker's lines go to its driver
_unrepeated_since: int | None = None  # lines printed after this mark are not printed again
_serial = itertools.count(1)
_shown: dict[Line, int] = {}          # each line printed: the serial of its last printing


def warn(message: str) -> None:
    _emit(("warn", message))


def info(message: str) -> None:
    _emit(("info", message))


def _emit(line: Line) -> None:
    with _lock:
        if _forward is not None:
            _forward(line)
        if _recording is not None:
            _recording.append(line)
        if _forward is not None or _recording is not None:
            return
        if _unrepeated_since is not None and _shown.get(line, 0) > _unrepeated_since:
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


def forward_lines(send: Callable[[Line], object]) -> None:
    """In a worker process of the local executor: `send` every line to the driver, which prints
    it, as it is said; nothing is printed here."""
    global _forward
    _forward = send


@contextmanager
def unrepeated(since: int) -> Iterator[None]:
    """A line already printed after the mark `since` is not printed again in this block (a
    task run in the driver's process that says what the driver said, as `replay` does)."""
    global _unrepeated_since
    with _lock:
        outer, _unrepeated_since = _unrepeated_since, since
    try:
        yield
    finally:
        with _lock:
            _unrepeated_since = outer


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
