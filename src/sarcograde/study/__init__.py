"""Run a whole comparative study from one YAML file: check and preprocess every cohort and
sequence, train one cross-validated ensemble per sequence, fuse them, grade every external site
with every model (DL-<SEQ>, DL-fusion, radiomics-<SEQ>, clinical, volume, clinical+volume),
evaluate each site and the pooled sites, explain, and write DIR/report.html. Each stage writes
into its own subfolder of DIR; rerun the same command to resume: finished steps whose inputs did
not change are skipped (DIR/study.json). The YAML's keys are described in docs/study.md."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from .. import executors
from ..artifacts import write_text
from ..config import load_config
from ..console import console, info
from ..errors import SarcogradeError
from ..formats.evaluation import format_estimate, read_model_metrics
from .plan import POOLED, STAGES, Layout, build_steps, evaluated_sites
from .runner import run_steps
from .spec import RADIOMICS, Study, load_study

__all__ = ["Layout", "Study", "load_study", "build_steps", "run_study", "external_aucs"]


def _write_config(study: Study, layout: Layout) -> None:
    """DIR/config.yaml and DIR/radiomics.yaml: the study's overrides of the preset's sections and
    of configs/radiomics.yaml, passed to the stages with --config; rewritten only when they
    change, since their hashes are part of those steps' keys."""
    for path, overrides in ((layout.config, study.config_overrides),
                            (layout.radiomics_config, study.overrides.get(RADIOMICS))):
        if not overrides:
            continue
        text = "# written by `sarcograde study` from the study's overrides\n" + yaml.safe_dump(
            overrides, sort_keys=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_text(path, text)


def external_aucs(layout: Layout, sites: list[str]) -> dict[str, dict[str, dict]]:
    """{site: {model: {"value", "ci95"}}} read from each site's metrics.json."""
    out = {}
    for site in sites:
        metrics = read_model_metrics(layout.evaluate(site))
        out[site] = {name: block.get("auc", {}) for name, block in metrics["models"].items()}
    return out


def run_study(path: str | Path, out: str | Path, *, jobs: int = 1, until: str = STAGES[-1],
              executor: tuple[str, ...] = ()) -> dict:
    """Run (or resume) the study; returns {"state": study.json, "auc": external_aucs or {}}."""
    study = load_study(path)
    layout = Layout(Path(out))
    layout.out.mkdir(parents=True, exist_ok=True)
    _write_config(study, layout)
    steps = build_steps(study, layout, jobs=jobs, until=until, executor=executor)
    info(f"study {study.path}: {len(study.sequences)} sequence(s), {len(study.test)} external "
         f"site(s), models {', '.join(study.model_names())}, {len(steps)} steps -> {layout.out}")
    trains_dl = "dl" in study.models and study.model is None
    if (study.preset == "paper" and trains_dl and not executor
            and STAGES.index(until) >= STAGES.index("train")):
        from ..train.cpu_estimate import say_epoch_time_before_study  # torch, only when needed

        say_epoch_time_before_study(load_config(study.preset, overrides=study.config_overrides))
    state = run_steps(steps, layout.state, config=study.as_dict())
    console.rule("[bold]study finished")
    if STAGES.index(until) < STAGES.index("evaluate"):
        return {"state": state, "auc": {}}
    aucs = external_aucs(layout, evaluated_sites(study))
    for site, models in aucs.items():
        info(f"{site}{' (all sites pooled)' if site == POOLED else ''}: " + "; ".join(
            f"{name} AUC {format_estimate(auc)}" for name, auc in models.items()))
    if layout.report.is_file():
        info(f"report: {layout.report.resolve()}")
    return {"state": state, "auc": aucs}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", type=Path, metavar="STUDY.yaml",
                        help="the study file (docs/study.md; example: examples/study.yaml)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="study folder (created; a rerun resumes it)")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="patients preprocessed in parallel (default: CPU cores, at most 4)")
    parser.add_argument("--until", choices=STAGES, default=STAGES[-1],
                        help="stop after this stage (default: run every stage)")
    executors.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    jobs = args.jobs if args.jobs is not None else max(1, min(4, os.cpu_count() or 1))
    if jobs < 1:
        raise SarcogradeError(f"--jobs must be at least 1, not {jobs}")
    executors.from_arguments(args)  # a missing Ray extra or a lone --ray-address: one line now
    executor = () if args.executor == "local" else (
        "--executor", "ray", *(("--ray-address", args.ray_address) if args.ray_address else ()),
        *(("--ray-dashboard",) if args.ray_dashboard else ()))
    run_study(args.study, args.out, jobs=jobs, until=args.until, executor=executor)
    return 0
