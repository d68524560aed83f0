"""Task functions that test_executors.py hands to worker processes: a module of their own, quick
to import in a spawned worker, and sent to Ray by value (Ray's workers cannot import tests/)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sarcograde.console import warn


def noisy(item: str) -> str:
    """A task that warns twice (once as every task does), then fails for "bad"."""
    warn(f"{item}: something to know")
    warn("every task says this")
    if item == "bad":
        raise ValueError(f"{item}: no\nway")
    return item.upper()


def meet(folder_and_name: tuple[Path, str]) -> int:
    """Leave a mark in the folder, then wait (at most a minute) until another task has left
    one too: only tasks that run at the same time both return. The process id."""
    folder, name = folder_and_name
    (folder / name).touch()
    deadline = time.monotonic() + 60
    while len(list(folder.iterdir())) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: no other task ran beside this one")
        time.sleep(0.05)
    return os.getpid()


def dies(item: str) -> str:
    """A task whose worker process ends without a word for "dead" (as the kernel's
    out-of-memory killer ends one)."""
    if item == "dead":
        os._exit(1)
    return item
