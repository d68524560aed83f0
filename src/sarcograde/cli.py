"""The `sarcograde` command: one subcommand per stage (docs/stages.md).

Each stage module exposes `add_arguments(parser)` and `run(args) -> int`; this file only wires
them up and turns a `SarcogradeError` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import sys
from pathlib import Path

from . import __version__
from .errors import SarcogradeError

# (subcommand, module, one-line help), in pipeline order.
COMMANDS = [
    ("check", "sarcograde.check", "validate a cohort manifest and write qa.csv"),
    ("synth", "sarcograde.synth", "write a synthetic multi-site cohort with a known grade signal"),
    ("import", "sarcograde.importers.cli", "build a manifest from a public collection (tcia-sts)"),
    ("preprocess", "sarcograde.preprocess.stage", "N4, 1 mm resampling, z-score, tumour slices"),
    ("train", "sarcograde.train.stage", "cross-validated DenseNet training (k folds x repeats)"),
    ("predict", "sarcograde.predict", "grade every patient of a cache with a run's ensemble"),
    ("radiomics", "sarcograde.radiomics.cli",
     "IBSI radiomics features (MIRP) and their cross-validated L1 logistic regression"),
    ("fusion", "sarcograde.fusion", "late fusion of the sequences' ensembles: DL-fusion"),
    ("evaluate", "sarcograde.evaluate.stage", "metrics with CIs, baselines, survival and Table 1"),
    ("export", "sarcograde.export",
     "a model package to share: fold weights, settings, threshold, metrics, model card"),
    ("recalibrate", "sarcograde.recalibrate",
     "a new version of a model package, its graded model recalibrated for a site"),
    ("grade", "sarcograde.grade.stage",
     "grade new patients with a model package: grade.json and a case report each"),
    ("explain", "sarcograde.explain", "Grad-CAM attention maps and tumour-attention scores"),
    ("report", "sarcograde.report", "one self-contained HTML report of an evaluation or a study"),
    ("study", "sarcograde.study", "a whole comparative study from one YAML file"),
    ("demo", "sarcograde.demo", "a study on synthetic sites (two sequences) -> report.html"),
]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (and its arguments added), so that
    `sarcograde --help` and light stages such as `check` do not pay for importing torch."""
    parser = argparse.ArgumentParser(
        prog="sarcograde",
        description="Soft-tissue sarcoma grading from MRI (low grade G1 vs high grade G2/G3).")
    parser.add_argument("--version", action="version", version=f"sarcograde {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in COMMANDS:
        if name != command:
            sub.add_parser(name, help=help_text, description=help_text)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


# Stages whose --out is a folder and stages whose --out is one file, or one package that is
# renamed into place whole (export's folder or zip), locked by its own name beside it.
FOLDER, FILE = "folder", "file"
FOLDER_OUTPUT = ("synth", "preprocess", "train", "evaluate", "grade", "explain", "study",
                 "demo")
FILE_OUTPUT = ("import", "predict", "report", "export")
# Commands with actions: which of them write a folder and which one file.
ACTION_OUTPUT = {"radiomics": {"extract": FOLDER, "fit": FOLDER, "predict": FILE},
                 "fusion": {"fit": FOLDER, "apply": FILE}}
# Out of space or quota: a one-line message, not a traceback, from wherever the write failed.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def output_lock(args: argparse.Namespace):
    """The lock on what the command writes, taken (and the folder checked) before any work, so
    that a second command writing the same output stops at once instead of doing it all twice."""
    from .artifacts import output_lock as lock

    if args.command == "check":  # its default folder is the manifest's
        from .check import output_folder

        return lock(output_folder(args))
    action = ACTION_OUTPUT.get(args.command, {}).get(getattr(args, "action", None))
    if args.command in FOLDER_OUTPUT or action == FOLDER:
        return lock(args.out)
    if args.command in FILE_OUTPUT or action == FILE:
        if args.out is None:  # report's default: report.html in the folder it reads
            from .formats.report import REPORT

            folder = getattr(args, "eval_dir", None) or getattr(args, "study", None)
            if folder is None:  # the stage itself says what is missing
                return contextlib.nullcontext()
            args.out = Path(folder) / REPORT
        return lock(Path(args.out).parent, f".{Path(args.out).name}.lock")
    return contextlib.nullcontext()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    names = {name for name, _, _ in COMMANDS}
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in names else None)
    args = parser.parse_args(argv)
    try:
        with output_lock(args):
            return int(args._run(args) or 0)
    except SarcogradeError as exc:
        print(f"sarcograde {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"sarcograde {args.command}: error: {where}{exc.strerror}; free some space and "
              "rerun the same command", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sarcograde {args.command}: interrupted; rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
