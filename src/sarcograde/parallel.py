"""The local executor's worker processes (`executors.LocalExecutor`): a pool of `spawn`
processes that die with this one, each with its share of the cores for SimpleITK's threads, whose
console lines reach this process as they are said."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.queues import SimpleQueue
from typing import Iterator

import SimpleITK as sitk

from . import console


def available_cpus() -> int:
    """The CPUs this process may run on: a job scheduler's allocation, else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def use_threads(threads: int) -> None:
    """SimpleITK's own threads in this process (a worker's share of the cores)."""
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when the parent dies (even by kill -9), so no orphan
    keeps computing and writing into the output; Linux only, elsewhere workers stop at EOF."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _init_worker(threads: int, parent: int, lines: SimpleQueue) -> None:
    _die_with_parent(parent)
    use_threads(threads)
    console.forward_lines(lines.put)


@contextlib.contextmanager
def worker_pool(processes: int) -> Iterator[tuple[ProcessPoolExecutor, SimpleQueue]]:
    """A pool of `processes` workers and the queue of their console lines (`said`).

    "spawn" rather than fork: forking a process whose ITK or OpenMP thread pool is running can
    hang. On the way out by an exception (Ctrl-C) the tasks not started are cancelled and the
    running ones stopped: what they finished is on disk, and a rerun resumes.
    """
    context = multiprocessing.get_context("spawn")
    lines = context.SimpleQueue()
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_init_worker,
                               initargs=(max(1, available_cpus() // processes), os.getpid(),
                                         lines))
    try:
        yield pool, lines
    except BaseException:
        # No public way to stop running workers before Python 3.14's terminate_workers().
        running = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in running:
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True)
        lines.close()


def said(lines: SimpleQueue) -> list[console.Line]:
    """The console lines the workers have said since the last call, without waiting."""
    heard = []
    while not lines.empty():
        heard.append(lines.get())
    return heard
