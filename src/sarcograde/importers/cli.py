"""Build a cohort manifest from a public collection as it is published.

One sub-command per collection; each writes a manifest.csv that `sarcograde check` and the other
stages read. Collections: tcia-sts (TCIA Soft-tissue-Sarcoma, as redistributed by the IBSI).
"""

from __future__ import annotations

import argparse
import importlib

# (sub-command, module, one-line help); each module has add_arguments(parser) and run(args).
COLLECTIONS = [
    ("tcia-sts", "sarcograde.importers.tcia_sts",
     "TCIA Soft-tissue-Sarcoma (IBSI NIfTI or DICOM + RTSTRUCT) and its clinical spreadsheet"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="collection", metavar="COLLECTION", required=True)
    for name, module_name, help_text in COLLECTIONS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_import=module.run)


def run(args: argparse.Namespace) -> int:
    return args._import(args)
