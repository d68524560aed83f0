"""Per-patient work in parallel processes, with a progress bar, for the stages that loop over
a cohort (preprocess, radiomics extract)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence, TypeVar

import SimpleITK as sitk

from .console import progress

T = TypeVar("T")
R = TypeVar("R")


def _init_worker(threads: int) -> None:
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)


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
                                     initializer=_init_worker, initargs=(threads,)) as pool:
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
