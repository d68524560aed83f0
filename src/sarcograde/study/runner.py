"""Run a study's steps in order, skipping those already finished with the same key.

A step's key is a hash of its command line (or, for a step the study does itself, its
parameters) and of the contents of its input files, which include the outputs of the steps it
depends on; so a changed manifest, config or upstream result reruns exactly the steps downstream
of it. `DIR/study.json` records each finished step (key, command, seconds) and, per invocation,
which steps ran and which were skipped. A step recorded by the previous version, whose command
spelt a since renamed option the old way, counts as the same. A step interrupted half-way is
not recorded and reruns; the stages resume their own work (preprocess per patient, train per
epoch).
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..artifacts import hash_config, hash_path, now, write_json
from ..console import console, info
from ..errors import SarcogradeError
from ..formats.common import read_json_object
from ..options import spelt_before_renames

# Flags that change how fast or where a stage runs, never what it writes: left out of the key
# (the executors give the same results); options with a value, then switches.
UNTRACKED_FLAGS = ("--jobs", "--executor", "--ray-address")
UNTRACKED_SWITCHES = ("--ray-dashboard",)


@dataclass
class Step:
    name: str                          # unique, e.g. "preprocess/train/T2FS"
    stage: str                         # one of plan.STAGES: --until stops after it
    inputs: list[Path]                 # files whose contents the result depends on
    outputs: list[Path]                # files a finished step leaves
    argv: list[str] | None = None      # `sarcograde ...` arguments, or
    action: Callable[[], None] | None = None  # a step the study does itself
    params: dict = field(default_factory=dict)  # what else an action's result depends on

    def key(self, argv: list[str] | None = None) -> str:
        """The hash of the step's command line (or `argv`), parameters and inputs' contents."""
        argv = list(self.argv or []) if argv is None else list(argv)
        for flag in UNTRACKED_FLAGS:
            while flag in argv:
                at = argv.index(flag)
                del argv[at:at + 2]
        argv = [a for a in argv if a not in UNTRACKED_SWITCHES]
        return hash_config({"argv": argv, "params": self.params,
                            "inputs": {str(p): hash_path(p) if p.exists() else None
                                       for p in self.inputs}})

    def key_before_renames(self) -> str | None:
        """The key the previous version gave this step, where it spelt an option of the command
        otherwise (options.RENAMED); None where it spelt them all alike."""
        before = spelt_before_renames(self.argv or [])
        return self.key(before) if before != (self.argv or []) else None

    def command(self) -> str:
        return "sarcograde " + " ".join(self.argv) if self.argv else self.name


@contextlib.contextmanager
def command_line(argv: list[str]) -> Iterator[None]:
    """sys.argv as if the step had been typed, so its run.json records its own command."""
    previous = sys.argv
    sys.argv = ["sarcograde", *argv]
    try:
        yield
    finally:
        sys.argv = previous


def run_stage(argv: list[str]) -> int:
    """`sarcograde ARGV` through the real command line; an argparse error is a status too."""
    from ..cli import main  # the stages' own command line: the code path a user runs

    with command_line(argv):
        try:
            return main(argv)
        except SystemExit as exc:  # argparse rejected the arguments (message already printed)
            return int(exc.code or 0) if not isinstance(exc.code, str) else 2


def run_steps(steps: list[Step], state_path: Path, config: dict | None = None) -> dict:
    """Run (or skip) every step; returns the state written to `state_path`, with `config` (the
    study as resolved from its YAML, which the report's methods read) under "config"."""
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError("step names must be unique")
    state = read_json_object(state_path) if state_path.is_file() else {}
    state.setdefault("steps", {})
    state.setdefault("runs", [])
    if config is not None:
        state["config"] = config
    log = {"start": now(), "ran": [], "skipped": []}
    state["runs"].append(log)
    start = time.perf_counter()
    for i, step in enumerate(steps, 1):
        key = step.key()
        done = state["steps"].get(step.name)
        if done and done["key"] == step.key_before_renames():
            done["key"] = key  # the same command, recorded with the old spellings: finished
        if done and done["key"] == key and all(p.exists() for p in step.outputs):
            log["skipped"].append(step.name)
            info(f"[dim]{i}/{len(steps)} {step.name}: finished earlier, skipped[/dim]")
            continue
        console.rule(f"[bold]{i}/{len(steps)}  {step.name}")
        console.print(f"[dim]$ {step.command()}[/dim]", soft_wrap=True)
        step_start = time.perf_counter()
        if step.argv is not None:
            status = run_stage(step.argv)
            if status != 0:
                write_json(state_path, state)
                raise SarcogradeError(
                    f"stopped at step {step.name}: `sarcograde {step.argv[0]}` exited with "
                    f"status {status}; fix the problem above and rerun the same command to resume",
                    path=state_path.parent)
        else:
            step.action()
        seconds = round(time.perf_counter() - step_start, 1)
        # The key of the inputs as they were when the step started: an input rewritten by the
        # step itself (none should be) would rerun it next time rather than hide a change.
        state["steps"][step.name] = {"key": key, "command": step.command(), "finished": now(),
                                     "seconds": seconds}
        log["ran"].append(step.name)
        write_json(state_path, state)
        info(f"[green]done[/green] {step.name} in {seconds:.0f} s")
    log["end"] = now()
    log["seconds"] = round(time.perf_counter() - start, 1)
    write_json(state_path, state)
    return state
