"""Run the whole pipeline on a synthetic two-site cohort and end with report.html.

`synth` writes a training site (about 35% low grade) and an external test site (about 15% low
grade, other spacing, orientation, bias field, noise and grey scale), then check, preprocess,
train (`quick` preset), predict, evaluate (baselines, survival, Youden), explain and report run
one after the other, each through the same command line a user types. A rerun with the same
arguments resumes: every stage keeps what it finished.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .artifacts import write_text
from .config import load_preset
from .console import console, info
from .errors import SarcogradeError
from .formats.evaluation import format_estimate, read_metrics

SEQUENCE = "T2FS"
# Two hospitals: the external one scans with thicker slices, coarser pixels, another
# orientation, a stronger bias field, more noise and another grey scale.
TRAINING_SITE = {"name": "siteA", "low_fraction": 0.35, "pixel_mm": "0.78,0.86",
                 "slice_mm": "4,4.5", "orientations": "LPS", "noise": 0.02, "bias": 0.15,
                 "scale": 900}
EXTERNAL_SITE = {"name": "siteB", "low_fraction": 0.15, "pixel_mm": "0.9,1.0",
                 "slice_mm": "5,6", "orientations": "RAS,LPI", "noise": 0.03, "bias": 0.3,
                 "scale": 2400}


@dataclass(frozen=True)
class DemoLayout:
    """Where each stage writes inside the demo folder."""

    out: Path

    def site(self, role: str) -> Path:
        return self.out / "data" / role

    def manifest(self, role: str) -> Path:
        return self.site(role) / "manifest.csv"

    def check(self, role: str) -> Path:
        return self.out / "check" / role

    def cache(self, role: str) -> Path:
        return self.out / "cache" / role

    @property
    def config(self) -> Path:
        return self.out / "demo-config.yaml"

    @property
    def run(self) -> Path:
        return self.out / "run"

    @property
    def predictions(self) -> Path:
        return self.out / "predictions.csv"

    @property
    def eval(self) -> Path:
        return self.out / "eval"

    @property
    def explain(self) -> Path:
        return self.out / "explain"

    @property
    def report(self) -> Path:
        return self.out / "report.html"


def _synth_args(layout: DemoLayout, role: str, site: dict, patients: int, seed: int) -> list[str]:
    return ["synth", str(layout.site(role)), "--patients", str(patients), "--site", site["name"],
            "--seed", str(seed), "--sequences", SEQUENCE,
            "--low-fraction", str(site["low_fraction"]), "--pixel-mm", site["pixel_mm"],
            "--slice-mm", site["slice_mm"], "--orientations", site["orientations"],
            "--noise", str(site["noise"]), "--bias", str(site["bias"]),
            "--scale", str(site["scale"])]


def demo_steps(layout: DemoLayout, *, patients_train: int, patients_test: int, seed: int,
               size: int | None, folds: int | None, bootstrap: int, jobs: int,
               train_config: Path | None = None) -> list[tuple[str, list[str]]]:
    """The demo as (title, sarcograde arguments) in pipeline order."""
    size_flag = ["--size", str(size)] if size else []
    config_flag = ["--config", str(train_config)] if train_config else []
    folds_flag = ["--folds", str(folds)] if folds else []
    steps = [
        ("synth: training site", _synth_args(layout, "train", TRAINING_SITE, patients_train,
                                             seed)),
        ("synth: external test site", _synth_args(layout, "test", EXTERNAL_SITE, patients_test,
                                                  seed + 1)),
    ]
    for role in ("train", "test"):
        steps.append((f"check: {role} cohort", ["check", str(layout.manifest(role)),
                                                "--out", str(layout.check(role))]))
    for role in ("train", "test"):
        steps.append((f"preprocess: {role} cohort",
                      ["preprocess", str(layout.manifest(role)), "--sequence", SEQUENCE,
                       "--out", str(layout.cache(role)), "--preset", "quick",
                       "--jobs", str(jobs), *size_flag]))
    steps += [
        ("train: cross-validated ensemble (quick preset)",
         ["train", str(layout.cache("train")), "--out", str(layout.run), "--preset", "quick",
          "--seed", str(seed), *config_flag, *folds_flag]),
        ("predict: external test site",
         ["predict", str(layout.run), str(layout.cache("test")), "--out",
          str(layout.predictions)]),
        ("evaluate: metrics, baselines, survival, Table 1",
         ["evaluate", str(layout.predictions), "--manifest", str(layout.manifest("test")),
          "--train-manifest", str(layout.manifest("train")), "--run", str(layout.run),
          "--out", str(layout.eval), "--bootstrap", str(bootstrap), "--seed", str(seed),
          "--sequence", SEQUENCE]),
        ("explain: Grad-CAM attention maps",
         ["explain", str(layout.run), str(layout.cache("test")), "--out", str(layout.explain),
          "--predictions", str(layout.predictions)]),
        ("report", ["report", str(layout.eval), "--out", str(layout.report),
                    "--explain", str(layout.explain), "--run", str(layout.run),
                    "--cache", str(layout.cache("test")),
                    "--title", "sarcograde demo: synthetic two-site cohort"]),
    ]
    return steps


@contextlib.contextmanager
def _command_line(argv: list[str]) -> Iterator[None]:
    """sys.argv as if the step had been typed, so its run.json records its own command."""
    previous = sys.argv
    sys.argv = ["sarcograde", *argv]
    try:
        yield
    finally:
        sys.argv = previous


def run_demo(out: str | Path, *, patients_train: int = 60, patients_test: int = 40,
             seed: int = 0, epochs: int | None = None, folds: int | None = None,
             size: int | None = None, bootstrap: int = 1000, jobs: int | None = None) -> dict:
    """Run every stage into `out`; returns {"report": path, "auc": metrics.json's AUC block}.

    `epochs`, `folds` and `size` shrink the `quick` preset further (the test suite's reduced
    run); left at None they keep the preset's values.
    """
    from .cli import main  # the stages' own command line: the code path a user runs

    if patients_train < 10 or patients_test < 5:
        raise SarcogradeError("the demo needs at least 10 training and 5 test patients")
    layout = DemoLayout(Path(out))
    layout.out.mkdir(parents=True, exist_ok=True)
    if epochs is not None:
        if epochs < 1:
            raise SarcogradeError(f"--quick-epochs must be at least 1, not {epochs}")
        write_text(layout.config, f"# written by `sarcograde demo`\ntrain:\n"
                                  f"  max_epochs: {int(epochs)}\n")
    else:
        layout.config.unlink(missing_ok=True)
    jobs = jobs or max(1, min(4, os.cpu_count() or 1))
    steps = demo_steps(layout, patients_train=patients_train, patients_test=patients_test,
                       seed=seed, size=size, folds=folds, bootstrap=bootstrap, jobs=jobs,
                       train_config=layout.config if epochs is not None else None)
    start = time.perf_counter()
    for i, (title, argv) in enumerate(steps, 1):
        console.rule(f"[bold]{i}/{len(steps)}  {title}")
        console.print(f"[dim]$ sarcograde {' '.join(argv)}[/dim]", soft_wrap=True)
        step_start = time.perf_counter()
        with _command_line(argv):
            status = main(argv)
        if status != 0:
            raise SarcogradeError(f"stopped at step {i} ({title}): `sarcograde {argv[0]}` exited "
                                  f"with status {status}; fix the problem above and rerun the "
                                  "same command to resume", path=layout.out)
        info(f"[green]done[/green] {title} in {time.perf_counter() - step_start:.0f} s")
    metrics = read_metrics(layout.eval)
    console.rule("[bold]demo finished")
    info(f"report: {layout.report.resolve()}")
    info(f"external test site AUC: {format_estimate(metrics['auc'])} on {metrics['n']} patients "
         f"({metrics['n_low']} low grade); total {time.perf_counter() - start:.0f} s")
    return {"report": layout.report, "auc": metrics["auc"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    quick = load_preset("quick")
    parser.add_argument("--out", type=Path, default=Path("demo-output"),
                        help="demo folder (default demo-output; a rerun resumes it)")
    parser.add_argument("--patients-train", type=int, default=60, metavar="N",
                        help="patients of the synthetic training site (default 60)")
    parser.add_argument("--patients-test", type=int, default=40, metavar="N",
                        help="patients of the synthetic external test site (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage (default 0)")
    parser.add_argument("--quick-epochs", type=int, metavar="N",
                        help="at most N epochs per fold model "
                             f"(quick preset: {quick['train']['max_epochs']})")
    parser.add_argument("--folds", type=int, metavar="K",
                        help=f"cross-validation folds (quick preset: {quick['train']['folds']})")
    parser.add_argument("--size", type=int, metavar="PX",
                        help=f"slice size in pixels (quick preset: {quick['preprocess']['size']})")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples for the CIs (default 1000)")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="patients preprocessed in parallel (default: CPU cores, at most 4)")


def run(args: argparse.Namespace) -> int:
    run_demo(args.out, patients_train=args.patients_train, patients_test=args.patients_test,
             seed=args.seed, epochs=args.quick_epochs, folds=args.folds, size=args.size,
             bootstrap=args.bootstrap, jobs=args.jobs)
    return 0
