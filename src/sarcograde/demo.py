"""Run the paper's whole comparative study on synthetic hospitals and end with report.html.

`synth` writes a training site (about 35% low grade) and two external sites (about 15% low
grade, other spacing, orientation, bias field, noise and grey scale), each with a T1FSGd and a
T2FS image per patient on different grids; the second external site has its T2FS contours
missing, so that the T1FSGd contour is carried onto the T2FS grid. Then `sarcograde study`
runs on a study file written beside the data (`DIR/study.yaml`, `quick` preset): every model
(DL-T1FSGd, DL-T2FS, DL-fusion, clinical, volume, clinical+volume) on each external site and
pooled. A rerun with the same arguments resumes: every step keeps what it finished.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .artifacts import write_text
from .config import load_preset
from .console import console
from .errors import SarcogradeError
from .formats.synth import MANIFEST
from .options import add_renamed_option
from .study import run_study
from .study.runner import run_stage

SEQUENCES = ("T1FSGd", "T2FS")
# Three hospitals: the external ones scan with thicker slices, coarser pixels, other
# orientations, a stronger bias field, more noise and other grey scales.
TRAINING_SITE = {"name": "siteA", "low_fraction": 0.35, "pixel_mm": "0.78,0.86",
                 "slice_mm": "4,4.5", "orientations": "LPS", "noise": 0.02, "bias": 0.15,
                 "scale": 900}
EXTERNAL_SITES = (
    {"name": "siteB", "low_fraction": 0.15, "pixel_mm": "0.9,1.0", "slice_mm": "5,6",
     "orientations": "RAS,LPI", "noise": 0.03, "bias": 0.3, "scale": 2400},
    # contoured on T1FSGd only: the T2FS mask is carried from it
    {"name": "siteC", "low_fraction": 0.25, "pixel_mm": "0.7,0.8", "slice_mm": "3,4",
     "orientations": "LPS,RPI", "noise": 0.025, "bias": 0.25, "scale": 1500,
     "missing_mask": "T2FS"},
)


@dataclass(frozen=True)
class DemoLayout:
    """The demo folder: synthetic data under data/, the study file, the study's own folders."""

    out: Path

    def manifest(self, site: str) -> Path:
        return self.out / "data" / site / MANIFEST

    @property
    def study(self) -> Path:
        return self.out / "study.yaml"


def synth_args(layout: DemoLayout, site: dict, patients: int, seed: int) -> list[str]:
    missing = ["--missing-mask", site["missing_mask"]] if "missing_mask" in site else []
    return ["synth", str(layout.manifest(site["name"]).parent), "--patients", str(patients),
            "--site", site["name"], "--seed", str(seed), "--sequences", ",".join(SEQUENCES),
            "--low-fraction", str(site["low_fraction"]), "--pixel-mm", site["pixel_mm"],
            "--slice-mm", site["slice_mm"], "--orientations", site["orientations"],
            "--noise", str(site["noise"]), "--bias", str(site["bias"]),
            "--scale", str(site["scale"]), *missing]


def study_file(layout: DemoLayout, *, seed: int, epochs: int | None, folds: int | None,
               size: int | None, bootstrap: int) -> dict:
    """The demo's STUDY.yaml content (paths relative to the demo folder)."""
    train = {k: v for k, v in (("max_epochs", epochs), ("folds", folds)) if v is not None}
    overrides = {"evaluate": {"bootstrap": bootstrap}}
    if train:
        overrides["train"] = train
    if size:
        overrides["preprocess"] = {"size": size}
    rel = lambda site: str(layout.manifest(site).relative_to(layout.out))  # noqa: E731
    return {"train": rel(TRAINING_SITE["name"]),
            "test": {site["name"]: rel(site["name"]) for site in EXTERNAL_SITES},
            "sequences": list(SEQUENCES), "target": "grade", "preset": "quick",
            "models": ["dl", "fusion", "clinical", "volume", "clinical+volume"], "seed": seed,
            "overrides": overrides}


def run_demo(out: str | Path, *, patients_train: int = 40, patients_test: int = 20,
             seed: int = 0, epochs: int | None = None, folds: int | None = None,
             size: int | None = None, bootstrap: int = 1000, jobs: int | None = None) -> dict:
    """Synthesise the sites, write DIR/study.yaml and run the study; returns run_study's result.

    `epochs`, `folds` and `size` shrink the `quick` preset further (the test suite's reduced
    run); left at None they keep the preset's values. `patients_test` is per external site.
    """
    if patients_train < 10 or patients_test < 5:
        raise SarcogradeError("the demo needs at least 10 training and 5 test patients per site")
    if epochs is not None and epochs < 1:
        raise SarcogradeError(f"--max-epochs must be at least 1, not {epochs}")
    layout = DemoLayout(Path(out))
    layout.out.mkdir(parents=True, exist_ok=True)
    sites = [(TRAINING_SITE, patients_train)] + [(s, patients_test) for s in EXTERNAL_SITES]
    for i, (site, patients) in enumerate(sites):
        argv = synth_args(layout, site, patients, seed + i)
        console.print(f"[dim]$ sarcograde {' '.join(argv)}[/dim]", soft_wrap=True)
        status = run_stage(argv)
        if status != 0:
            raise SarcogradeError(f"`sarcograde synth` of {site['name']} exited with status "
                                  f"{status}", path=layout.out)
    spec = study_file(layout, seed=seed, epochs=epochs, folds=folds, size=size,
                      bootstrap=bootstrap)
    write_text(layout.study, "# written by `sarcograde demo`; rerun `sarcograde study "
                             f"{layout.study} --out {layout.out}` to resume\n"
               + yaml.safe_dump(spec, sort_keys=False))
    return run_study(layout.study, layout.out,
                     jobs=jobs or max(1, min(4, os.cpu_count() or 1)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    quick = load_preset("quick")
    parser.add_argument("--out", type=Path, default=Path("demo-output"),
                        help="demo folder (default demo-output; a rerun resumes it)")
    parser.add_argument("--patients-train", type=int, default=40, metavar="N",
                        help="patients of the synthetic training site (default 40)")
    parser.add_argument("--patients-test", type=int, default=20, metavar="N",
                        help="patients of each synthetic external site (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage (default 0)")
    add_renamed_option(parser, "demo", "--max-epochs", type=int, metavar="N",
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
             seed=args.seed, epochs=args.max_epochs, folds=args.folds, size=args.size,
             bootstrap=args.bootstrap, jobs=args.jobs)
    return 0
