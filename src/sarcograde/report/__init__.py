"""`sarcograde report`: the results as one self-contained HTML page.

`sarcograde report EVAL` writes the page of one evaluation (with its attention maps, training
curves and provenance); `sarcograde report --study DIR` writes a study's results section: per
external site and pooled, patient flow, Table 1, Table 2 of every model, ROC, calibration,
Kaplan-Meier panel, DeLong matrix, attention galleries per DL model, methods and provenance.

The page is self-contained (inline CSS, images as base64 data URIs, no script, no network), so
a clinician can open it offline, print it or attach it to a manuscript draft. Every number on it
is read from the artifacts of the earlier stages (docs/artifacts.md), in inputs.py only; a part
that was not run is stated as "not run", never left out silently. The markup lives in Jinja2
templates (templates/), autoescaped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..console import info
from ..errors import SarcogradeError
from . import evaluation, study
from .format import format_ci, format_estimate, format_number, format_p
from ..formats.evaluation import METRICS, compares_models
from ..formats.report import REPORT
from .inputs import ReportInputs, StudyInputs
from .methods import methods_paragraph
from .render import render, write_page

__all__ = ["SarcogradeError", "build_report", "build_study_report", "format_ci",
           "format_estimate", "format_number", "format_p", "methods_paragraph", "render_report",
           "render_study_report", "ReportInputs", "StudyInputs"]


def render_report(inputs: ReportInputs, title: str | None = None) -> str:
    return render("report.html.j2", evaluation.context(inputs), title=title or evaluation.TITLE)


def render_study_report(inputs: StudyInputs, title: str | None = None) -> str:
    return render("study.html.j2", study.context(inputs), title=title or study.TITLE)


def build_report(eval_dir, out, *, explain_dir=None, run_dir=None, cache_dir=None,
                 title: str | None = None) -> Path:
    """Write the report of an evaluate folder (and optionally explain/run/cache) to `out`.

    A multi-model evaluate folder (metrics.json with `models`) gets the study page of one site.
    """
    if compares_models(eval_dir):
        if any((explain_dir, run_dir, cache_dir)):
            raise SarcogradeError("--explain, --run and --cache go with a one-model evaluation; "
                                  "report a multi-model one inside its study (--study DIR)",
                                  path=eval_dir)
        page = render_study_report(StudyInputs.from_evaluation(Path(eval_dir)), title)
        return write_page(out, page, config={"eval": str(eval_dir), "title": title},
                          inputs={"metrics": Path(eval_dir) / METRICS})
    inputs = ReportInputs(Path(eval_dir), explain_dir=explain_dir, run_dir=run_dir,
                          cache_dir=cache_dir)
    page = render_report(inputs, title)
    folders = {"eval": inputs.eval_dir, "explain": inputs.explain_dir, "run": inputs.run_dir,
               "cache": inputs.cache_dir}
    config = {name: str(folder) if folder else None for name, folder in folders.items()}
    return write_page(out, page, config={**config, "title": title},
                      inputs={"metrics": inputs.eval_dir / METRICS})


def build_study_report(study_dir, out=None, *, title: str | None = None) -> Path:
    """Write the report of a `sarcograde study` folder (default: DIR/report.html)."""
    inputs = StudyInputs.load(Path(study_dir))
    page = render_study_report(inputs, title)
    out = Path(out) if out is not None else inputs.folder / REPORT
    return write_page(out, page, config={"study": str(inputs.folder), "title": title},
                      inputs={f"metrics_{site}": folder.folder / METRICS
                              for site, folder in inputs.sites.items()})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("eval_dir", metavar="EVAL", type=Path, nargs="?", default=None,
                        help="output folder of `sarcograde evaluate` (holds metrics.json)")
    parser.add_argument("--study", type=Path, default=None, metavar="DIR",
                        help="a `sarcograde study` folder: report every site and model of it "
                             "(instead of EVAL)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the HTML file to write (default: EVAL/report.html or "
                             "DIR/report.html)")
    parser.add_argument("--explain", type=Path, default=None, metavar="DIR",
                        help="output folder of `sarcograde explain` (attention gallery)")
    parser.add_argument("--run", type=Path, default=None, metavar="RUN",
                        help="output folder of `sarcograde train` (learning curves, config)")
    parser.add_argument("--cache", type=Path, default=None, metavar="CACHE",
                        help="the test cohort's preprocess cache (preprocessing parameters)")
    parser.add_argument("--title", default=None, help="page title")


def run(args: argparse.Namespace) -> int:
    if (args.eval_dir is None) == (args.study is None):
        raise SarcogradeError("give either EVAL (one evaluation) or --study DIR, not both or "
                              "neither")
    if args.study is not None:
        if any((args.explain, args.run, args.cache)):
            raise SarcogradeError("--explain, --run and --cache are for EVAL; a study folder "
                                  "holds its own explain/ and train/")
        path = build_study_report(args.study, args.out, title=args.title)
    else:
        out = args.out or Path(args.eval_dir) / REPORT
        path = build_report(args.eval_dir, out, explain_dir=args.explain, run_dir=args.run,
                            cache_dir=args.cache, title=args.title)
    info(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
