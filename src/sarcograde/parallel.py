"""Per-patient work in parallel processes, with a progress bar, for the stages that loop over
a cohort (preprocess, radiomics extract)."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence, TypeVar

import SimpleITK as sitk

from .console import progress

T = TypeVar("T")
R = TypeVar("R")


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when the parent dies (even by kill -9), so no orphan
    keeps computing and writing into the output; Linux only, elsewhere workers stop at EOF."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def use_threads(threads: int) -> None:
    """SimpleITK's own threads in this process (a worker's share of the cores)."""
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)


def _init_worker(threads: int, parent: int) -> None:
    _die_with_parent(parent)
    use_threads(threads)


def run_tasks(work: Callable[[T], R], tasks: Sequence[T], jobs: int, description: str,
              crashed: Callable[[T], R]) -> list[R]:
    """`work(task)` for every task, `jobs` processes at a time; results in task order.

    `work` must be a picklable top-level function that turns its own failures into a result;
    `crashed(task)` is the result of a task whose worker process died (e.g. out of memory).
    """
    results: dict[int, R] = {}
    with progress() as bar:
        counter = bar.add_task(description, total=len(tasks))
        if jobs == 1:
            for i, task in enumerate(tasks):
                results[i] = work(task)
                bar.advance(counter)
        else:
            # Each process gets its share of the cores for SimpleITK's own threads. "spawn"
            # rather than fork: forking a process whose ITK thread pool is running can hang.
            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_init_worker,
                                     initargs=(threads, os.getpid())) as pool:
                futures = {pool.submit(work, task): i for i, task in enumerate(tasks)}
                try:
                    for future in as_completed(futures):
                        i = futures[future]
                        try:
                            results[i] = future.result()
                        except BrokenProcessPool:
                            results[i] = crashed(tasks[i])
                        bar.advance(counter)
                except KeyboardInterrupt:
                    # Finished patients are on disk; do not start the queued ones on the way out.
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    return [results[i] for i in range(len(tasks))]
