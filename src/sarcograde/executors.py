"""Where a stage's independent tasks run: here (`--executor local`, the default) or on Ray
(`--executor ray`): a local Ray started on this machine's cores and GPUs, or a running Ray
cluster named by `--ray-address`.

A stage hands `RayExecutor.map` a module-level function and its picklable inputs (one per
patient, per fold, ...); each call becomes one Ray task with the CPUs and GPUs it declares.
Ray retries a task whose worker died (`max_retries`); the task functions are written so that a
retry resumes (finished patients are reused, a fold goes on from its checkpoint). Ctrl-C cancels
the tasks still running and leaves what they finished.

Ray runs without forwarding the workers' output (it would break the progress bar), so a task's
`console.warn` and `console.info` lines are recorded and come back with its result (or its
error); the driver prints them as each task finishes, once: a line already shown since the
executor was made (the driver's own, or another task's) is not repeated. Only the attempt that
finished is heard from: the lines of an attempt whose worker died are lost with it.

Ray is an optional extra (`pip install sarcograde[cluster]`) and is imported only here, only
when asked for.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from . import console
from .console import info, progress
from .errors import SarcogradeError

EXECUTORS = ("local", "ray")
MAX_RETRIES = 3
T = TypeVar("T")
R = TypeVar("R")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("executor")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="run the tasks here (local, default) or as Ray tasks (ray)")
    group.add_argument("--ray-address", metavar="ADDR",
                       help="a running Ray cluster, e.g. 'auto' or 'HEAD:6379' (default: start "
                            "a Ray on this machine's CPUs and GPUs)")
    group.add_argument("--ray-dashboard", action="store_true",
                       help="start the Ray dashboard with the local Ray (needs ray[default])")


def from_arguments(args: argparse.Namespace) -> "RayExecutor | None":
    """The executor the command line asked for; None is the local executor."""
    if args.executor == "local":
        for flag, given in (("--ray-address", args.ray_address),
                            ("--ray-dashboard", args.ray_dashboard)):
            if given:
                raise SarcogradeError(f"{flag} needs --executor ray")
        return None
    _import_ray()  # a missing extra is an error now, not after the inputs were read
    return RayExecutor(args.ray_address, dashboard=args.ray_dashboard)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SarcogradeError("--executor ray needs Ray: pip install 'sarcograde[cluster]'") \
            from None
    return ray


class RayExecutor:
    """Ray tasks, on a Ray started here or on the cluster at `address`.

    Use as a context manager: it connects on entry (or reuses a Ray already initialised in this
    process, as the tests do) and shuts down on exit only a Ray it started.
    """

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
                context = ray.init(num_cpus=os.cpu_count(), include_dashboard=self.dashboard,
                                   **options)
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

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, label: str,
            names: Sequence[str], num_cpus: float = 1, num_gpus: float = 0,
            failed: Callable[[R], bool] = lambda result: False,
            on_error: Callable[[T, str], R] | None = None) -> list[R]:
        """`[fn(item) for item in items]`, one Ray task per item, results in item order.

        `names` label the tasks in messages (patient ids, fold names). `failed(result)` counts a
        returned result as a failure on the progress bar. A task that raised, or whose worker died
        more than `MAX_RETRIES` times, becomes `on_error(item, message)`; without `on_error` it is
        a one-line SarcogradeError once the other tasks have finished.
        """
        ray = _import_ray()
        # named after `fn`: the task's name in Ray and its worker's process title (ray::fn)
        remote = ray.remote(_recorded_call).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_retries=MAX_RETRIES,
            retry_exceptions=False, name=getattr(fn, "__name__", "task"))
        refs = [remote.remote(fn, item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(items)
        errors: list[str] = []
        slots = self._slots(num_cpus, num_gpus)
        pending, n_failed = list(refs), 0
        try:
            with progress() as bar:
                task = bar.add_task(label, total=len(items))

                def describe() -> str:
                    done = len(items) - len(pending)
                    return (f"{label}: {done - n_failed} done, {min(len(pending), slots)} "
                            f"running, {n_failed} failed")

                bar.update(task, description=describe())
                while pending:
                    ready, pending = ray.wait(pending, num_returns=1)
                    i = index[ready[0]]
                    try:
                        results[i], lines = ray.get(ready[0])
                        console.replay(lines, since=self._mark)
                        n_failed += bool(failed(results[i]))
                    except ray.exceptions.RayError as exc:
                        n_failed += 1
                        # what the task said before it failed, then the failure
                        console.replay(getattr(getattr(exc, "cause", None), "lines", []),
                                       since=self._mark)
                        if on_error is None:
                            errors.append(f"{names[i]}: {_one_line(exc)}")
                        else:
                            results[i] = on_error(items[i], _one_line(exc))
                    bar.update(task, advance=1, description=describe())
        except KeyboardInterrupt:
            # Finished artifacts are on disk already; stop the rest on the way out.
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        if errors:
            raise SarcogradeError(f"{len(errors)} Ray task(s) failed: " + "; ".join(errors))
        return results

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
        slots = self._slots(0 if gpu else 1, 1 if gpu else 0)
        return [tuple(items[i] for i in part)
                for part in np.array_split(np.arange(len(items)), min(len(items), 2 * slots))]

    def _slots(self, num_cpus: float, num_gpus: float) -> int:
        """How many of these tasks the cluster can run at once (for the progress bar)."""
        total = self.resources()
        fits = [total.get("CPU", 0) / num_cpus] if num_cpus else []
        fits += [total.get("GPU", 0) / num_gpus] if num_gpus else []
        return max(1, int(min(fits))) if fits else 1


class TaskFailed(Exception):
    """A task's exception as one line, with the console lines the task recorded before it."""

    def __init__(self, message: str, lines: list[console.Line]):
        super().__init__(message, lines)
        self.message, self.lines = message, lines

    def __str__(self) -> str:
        return self.message


def _recorded_call(fn: Callable[[T], R], item: T) -> tuple[R, list[console.Line]]:
    """`fn(item)` in a Ray worker, with the console lines it recorded (see the module's doc)."""
    with console.recorded() as lines:
        try:
            return fn(item), lines
        except Exception as exc:
            raise TaskFailed(_one_line(exc), lines) from exc


def _one_line(exc: BaseException) -> str:
    """A Ray error as one line: the remote exception's message, or why the worker died."""
    cause = getattr(exc, "cause", None) or exc  # RayTaskError wraps the task's own exception
    return (" ".join(str(cause).split()) or type(cause).__name__)[:300]
