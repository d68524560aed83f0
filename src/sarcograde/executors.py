"""Where a stage's independent tasks run: on this machine (`--executor local`, the default,
`LocalExecutor`) or on Ray (`--executor ray`, `RayExecutor`): a local Ray started on this
machine's cores and GPUs, or a running Ray cluster named by `--ray-address`.

A stage hands `map` a module-level function and its picklable inputs (one per patient, per
fold, ...) with the CPUs and GPUs each task needs, and gets the results in the inputs' order;
the two executors have the same interface, so a stage does not ask which one it has. Locally the
tasks run in this process when one runs at a time, else in a pool of worker processes, as many
as the CPUs hold; on Ray each call is one Ray task, which Ray retries when its worker died
(`max_retries`). The task functions are written so that a retry or a rerun resumes (finished
patients are reused, a fold goes on from its checkpoint). Ctrl-C cancels the tasks not finished
and leaves what they finished.

A task's `console.warn` and `console.info` lines in another process are recorded and come back
with its result (or its error); the driver prints them as each task finishes, once: a line
already shown since the executor was made (the driver's own, or another task's) is not
repeated. A local worker process also sends each line as it is said, so that a log shows a
fold's epochs while it trains. Of a Ray attempt whose worker died, nothing is heard.

Ray is an optional extra (`pip install sarcograde[cluster]`) and is imported only here, only
when asked for.
"""

from __future__ import annotations

import argparse
import dataclasses
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from . import console, parallel
from .console import info, progress
from .errors import SarcogradeError

EXECUTORS = ("local", "ray")
MAX_RETRIES = 3
# Seconds between two looks for what the local worker processes said.
HEAR_EVERY_S = 0.5
WORKER_DIED = "its worker process died (out of memory? fewer processes at once need less)"
T = TypeVar("T")
R = TypeVar("R")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("executor")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="run the tasks on this machine (local, default) or as Ray tasks "
                            "(ray)")
    group.add_argument("--ray-address", metavar="ADDR",
                       help="a running Ray cluster, e.g. 'auto' or 'HEAD:6379' (default: start "
                            "a Ray on this machine's CPUs and GPUs)")
    group.add_argument("--ray-dashboard", action="store_true",
                       help="start the Ray dashboard with the local Ray (needs ray[default])")


def from_arguments(args: argparse.Namespace,
                   workers: int | None = None) -> "LocalExecutor | RayExecutor":
    """The executor the command line asked for; `workers`: the local executor's processes at
    once (a stage's `--jobs`; default: as many as the CPUs hold)."""
    if args.executor == "local":
        for flag, given in (("--ray-address", args.ray_address),
                            ("--ray-dashboard", args.ray_dashboard)):
            if given:
                raise SarcogradeError(f"{flag} needs --executor ray")
        return LocalExecutor(workers)
    _import_ray()  # a missing extra is an error now, not after the inputs were read
    return RayExecutor(args.ray_address, dashboard=args.ray_dashboard)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SarcogradeError("--executor ray needs Ray: pip install 'sarcograde[cluster]'") \
            from None
    return ray


class _Tally:
    """One `map` call's results, failures and progress bar, and its tasks' console lines
    replayed once (see the module's doc). The bar of Ray tasks, which may wait for the
    cluster, says `label: 3 done, 2 running, 0 failed`; a local one its label."""

    def __init__(self, items: Sequence, names: Sequence[str], label: str, slots: int,
                 failed: Callable[[Any], bool], on_error: Callable[[Any, str], Any] | None,
                 mark: int, *, noun: str = "task", counted: bool = False):
        self.items, self.names, self.label, self.slots = items, names, label, slots
        self.failed, self.on_error, self.mark = failed, on_error, mark
        self.noun, self.counted = noun, counted
        self.results: list[Any] = [None] * len(items)
        self.errors: list[str] = []
        self.done = self.n_failed = 0

    def __enter__(self) -> "_Tally":
        self.progress = progress().__enter__()
        self.task = self.progress.add_task(self.label, total=len(self.items))
        self.progress.update(self.task, description=self._describe())
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def _describe(self) -> str:
        if not self.counted:
            return self.label
        running = min(len(self.items) - self.done, self.slots)
        return (f"{self.label}: {self.done - self.n_failed} done, {running} running, "
                f"{self.n_failed} failed")

    def _advance(self) -> None:
        self.done += 1
        self.progress.update(self.task, advance=1, description=self._describe())

    def finished(self, i: int, result: Any, lines: list[console.Line]) -> None:
        console.replay(lines, since=self.mark)
        self.results[i] = result
        self.n_failed += bool(self.failed(result))
        self._advance()

    def raised(self, i: int, message: str, lines: list[console.Line]) -> None:
        """Task i raised `message` (or its worker died), after saying `lines`."""
        console.replay(lines, since=self.mark)
        self.n_failed += 1
        if self.on_error is None:
            self.errors.append(f"{self.names[i]}: {message}")
        else:
            self.results[i] = self.on_error(self.items[i], message)
        self._advance()

    def outcome(self) -> list[Any]:
        """The results in item order; the failures without `on_error` as one line."""
        if self.errors:
            raise SarcogradeError(f"{len(self.errors)} {self.noun}(s) failed: "
                                  + "; ".join(self.errors))
        return self.results


class LocalExecutor:
    """Tasks on this machine: in this process while one runs at a time, else in a pool of
    worker processes (`parallel.worker_pool`), as many as `workers` or the CPUs hold.

    A task needing a GPU runs in this process, one at a time (no task is placed on a GPU of its
    own here; `--executor ray` does that). In this process a task's errors are the stage's own:
    they stop the stage as they are. `with executor:` is accepted, like Ray's, and does nothing.
    """

    def __init__(self, workers: int | None = None):
        self.workers = workers
        self._mark = console.mark()  # lines already shown since then are not repeated

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        pass

    @property
    def where(self) -> str:
        return f"{self.workers} job(s)" if self.workers else "local processes"

    def resources(self) -> dict[str, float]:
        """This machine's CPUs (those this process may use) and the GPUs torch sees."""
        import torch

        return {"CPU": float(parallel.available_cpus()), "GPU": float(torch.cuda.device_count())}

    def slots(self, num_cpus: float = 1, num_gpus: float = 0) -> int:
        """How many tasks of `num_cpus` CPUs (and `num_gpus` GPUs) run at once."""
        if num_gpus:
            return 1
        return self.workers or max(1, int(parallel.available_cpus() // max(num_cpus, 1)))

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, label: str,
            names: Sequence[str], num_cpus: float = 1, num_gpus: float = 0,
            failed: Callable[[R], bool] = lambda result: False,
            on_error: Callable[[T, str], R] | None = None) -> list[R]:
        """`[fn(item) for item in items]`, results in item order, `RayExecutor.map`'s contract.

        In this process (one slot, or one item) a lone task shows its own progress; several
        share a bar of tasks. In worker processes a task that raised or whose worker died
        becomes `on_error(item, message)`, or without `on_error` a one-line SarcogradeError
        once the other tasks have finished.
        """
        processes = min(len(items), self.slots(num_cpus, num_gpus))
        tally = _Tally(items, names, label, max(processes, 1), failed, on_error, self._mark)
        if processes <= 1:
            return self._here(fn, items, tally)
        return self._in_processes(fn, items, processes, tally)

    def _here(self, fn: Callable[[T], R], items: Sequence[T], tally: _Tally) -> list[R]:
        with console.unrepeated(self._mark):  # what the driver said already, said once
            if len(items) == 1:
                return [fn(items[0])]
            with tally:
                for i, item in enumerate(items):
                    tally.finished(i, fn(item), [])
        return tally.outcome()

    def _in_processes(self, fn: Callable[[T], R], items: Sequence[T], processes: int,
                      tally: _Tally) -> list[R]:
        with parallel.worker_pool(processes) as (pool, lines), tally:
            futures = {pool.submit(_recorded_call, fn, item): i for i, item in enumerate(items)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=HEAR_EVERY_S, return_when=FIRST_COMPLETED)
                for line in parallel.said(lines):  # as said, each once
                    console.replay([line], since=self._mark)
                for future in sorted(done, key=futures.get):
                    i = futures[future]
                    try:
                        result, said = future.result()
                    except TaskFailed as exc:
                        tally.raised(i, exc.message, exc.lines)
                    except BrokenProcessPool:
                        tally.raised(i, WORKER_DIED, [])
                    except Exception as exc:  # e.g. a result that could not be pickled
                        tally.raised(i, _one_line(exc), [])
                    else:
                        tally.finished(i, result, said)
        return tally.outcome()

    def map_patient_batches(self, fn: Callable[[Any], R], job: Any, patients: Sequence[str], *,
                            label: str, gpu: bool) -> list[R]:
        """Nothing handed out: the stage's own pass over the patients, in this process, does
        their work, with the network loaded once and torch's threads on every core (worker
        processes would each hold the whole ensemble). See `RayExecutor.map_patient_batches`."""
        return []


class RayExecutor:
    """Ray tasks, on a Ray started here or on the cluster at `address`.

    Use as a context manager: it connects on entry (or reuses a Ray already initialised in this
    process, as the tests do) and shuts down on exit only a Ray it started.
    """

    where = "Ray tasks"

    def __init__(self, address: str | None = None, *, dashboard: bool = False):
        self.address = address
        self.dashboard = dashboard
        self._started = False
        self._mark = console.mark()  # task lines already shown since then are not repeated

    def __enter__(self) -> "RayExecutor":
        ray = _import_ray()
        if not ray.is_initialized():
            options: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
            if self.address:
                context = ray.init(address=self.address, **options)
                url = getattr(context, "dashboard_url", "")
                info(f"Ray cluster at {self.address}"
                     + (f"; dashboard http://{url}" if url else " (no dashboard)"))
            else:
                context = ray.init(num_cpus=parallel.available_cpus(),
                                   include_dashboard=self.dashboard, **options)
                if self.dashboard and getattr(context, "dashboard_url", ""):
                    info(f"Ray dashboard: http://{context.dashboard_url}")
            self._started = True
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            _import_ray().shutdown()

    def resources(self) -> dict[str, float]:
        """The cluster's total resources ('CPU', 'GPU', ...)."""
        return dict(_import_ray().cluster_resources())

    def slots(self, num_cpus: float = 1, num_gpus: float = 0) -> int:
        """How many of these tasks the cluster can run at once."""
        total = self.resources()
        fits = [total.get("CPU", 0) / num_cpus] if num_cpus else []
        fits += [total.get("GPU", 0) / num_gpus] if num_gpus else []
        return max(1, int(min(fits))) if fits else 1

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, label: str,
            names: Sequence[str], num_cpus: float = 1, num_gpus: float = 0,
            failed: Callable[[R], bool] = lambda result: False,
            on_error: Callable[[T, str], R] | None = None) -> list[R]:
        """`[fn(item) for item in items]`, one Ray task per item, results in item order.

        `names` label the tasks in messages (patient ids, fold names). `failed(result)` counts a
        returned result as a failure on the progress bar. A task that raised, or whose worker died
        more than `MAX_RETRIES` times, becomes `on_error(item, message)`; without `on_error` it is
        a one-line SarcogradeError once the other tasks have finished. SimpleITK's threads in a
        task are its CPUs.
        """
        ray = _import_ray()
        # named after `fn`: the task's name in Ray and its worker's process title (ray::fn)
        remote = ray.remote(_recorded_call).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_retries=MAX_RETRIES,
            retry_exceptions=False, name=getattr(fn, "__name__", "task"))
        threads = max(1, int(num_cpus))
        refs = [remote.remote(fn, item, threads) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        try:
            with _Tally(items, names, label, self.slots(num_cpus, num_gpus), failed, on_error,
                        self._mark, noun="Ray task", counted=True) as tally:
                while pending:
                    ready, pending = ray.wait(pending, num_returns=1)
                    i = index[ready[0]]
                    try:
                        result, lines = ray.get(ready[0])
                    except ray.exceptions.RayError as exc:
                        # what the task said before it failed, then the failure
                        tally.raised(i, _one_line(exc),
                                     getattr(getattr(exc, "cause", None), "lines", []))
                    else:
                        tally.finished(i, result, lines)
        except KeyboardInterrupt:
            # Finished artifacts are on disk already; stop the rest on the way out.
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return tally.outcome()

    def map_patient_batches(self, fn: Callable[[Any], R], job: Any, patients: Sequence[str], *,
                            label: str, gpu: bool) -> list[R]:
        """`fn(dataclasses.replace(job, patients=batch))` for the consecutive `batches` of
        `patients`, one Ray task each of 1 GPU (`gpu`) or else 1 CPU; results in batch order.
        Connects for the call (`with self`)."""
        with self:
            batches = self.batches(patients, gpu=gpu)
            return self.map(fn, [dataclasses.replace(job, patients=b) for b in batches],
                            label=label, names=[f"patients {b[0]}..{b[-1]}" for b in batches],
                            num_cpus=1, num_gpus=int(gpu))

    def batches(self, items: Sequence[T], *, gpu: bool) -> list[tuple[T, ...]]:
        """`items` in consecutive batches for tasks of 1 GPU (`gpu`) or else 1 CPU each: two
        batches per slot of the cluster, so that a slow batch does not leave slots idle."""
        if not items:
            return []
        slots = self.slots(0 if gpu else 1, 1 if gpu else 0)
        return [tuple(items[i] for i in part)
                for part in np.array_split(np.arange(len(items)), min(len(items), 2 * slots))]


class TaskFailed(Exception):
    """A task's exception as one line, with the console lines the task recorded before it."""

    def __init__(self, message: str, lines: list[console.Line]):
        super().__init__(message, lines)
        self.message, self.lines = message, lines

    def __str__(self) -> str:
        return self.message


def _recorded_call(fn: Callable[[T], R], item: T,
                   threads: int | None = None) -> tuple[R, list[console.Line]]:
    """`fn(item)` in another process, with the console lines it recorded (see the module's
    doc); `threads`: SimpleITK's threads for it (a Ray task's CPUs)."""
    if threads is not None:
        parallel.use_threads(threads)
    with console.recorded() as lines:
        try:
            return fn(item), lines
        except Exception as exc:
            raise TaskFailed(_one_line(exc), lines) from exc


def _one_line(exc: BaseException) -> str:
    """An error as one line: the task's own message, or why its worker died."""
    cause = getattr(exc, "cause", None) or exc  # RayTaskError wraps the task's own exception
    return (" ".join(str(cause).split()) or type(cause).__name__)[:300]
