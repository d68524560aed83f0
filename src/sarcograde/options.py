"""Command-line option helpers shared by several commands (the stages and `cli`), so that no
stage imports the command line itself: `NAME=PATH` values, and the options renamed so that one
name means one thing across commands (their old spellings kept, deprecated, for one version)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NamedTuple

from .errors import SarcogradeError


def split_assignment(spec: str, flag: str, form: str = "NAME=PATH") -> tuple[str, str]:
    """`NAME=VALUE` of a repeatable option (e.g. `--predictions DL-T2FS=a.csv`) as its two
    stripped parts; a one-line error naming the option otherwise."""
    name, sep, value = spec.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise SarcogradeError(f"{flag} {spec!r} is not {form}")
    return name.strip(), value.strip()


class Renamed(NamedTuple):
    """An option of `command` ("train", "fusion apply") once spelt `old`; `value`: the new
    option's value that an old switch stood for (`--bf16` is `--precision bf16`)."""

    command: str
    old: str
    new: str
    value: str | None = None

    @property
    def replacement(self) -> str:
        return self.new if self.value is None else f"{self.new} {self.value}"


# Every renamed option; the old spellings go in the next version.
RENAMED = (
    Renamed("train", "--bf16", "--precision", "bf16"),
    Renamed("train", "--threads", "--threads-per-fold"),
    Renamed("explain", "--predictions", "--slice-logits"),
    Renamed("explain", "--patients", "--patient-ids"),
    Renamed("fusion apply", "--predictions", "--sequence"),
    Renamed("demo", "--quick-epochs", "--max-epochs"),
)


def deprecation_note(where: str, old: str, new: str, what: str = "spelling") -> None:
    """One line on stderr: `old` still works, as `new`, for this version only."""
    print(f"{where}: note: {old} is deprecated; use {new} (the old {what} goes in the next "
          "version)", file=sys.stderr)


class _OldSpelling(argparse.Action):
    """The hidden old spelling of an option: a note, then what the new spelling does."""

    def __init__(self, option_strings, dest, *, renamed: Renamed, target: argparse.Action,
                 **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.renamed, self.target = renamed, target

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) == self.target.default:  # once, not per repeat
            deprecation_note(parser.prog, self.renamed.old, self.renamed.replacement)
        if self.renamed.value is not None:
            values = self.renamed.value if self.target.nargs is None else [self.renamed.value]
        self.target(parser, namespace, values, self.renamed.new)


def add_renamed_option(parser: argparse.ArgumentParser, command: str, new: str,
                       **kwargs: Any) -> argparse.Action:
    """`parser.add_argument(new, **kwargs)` for an option listed in RENAMED, with its old
    spelling beside it: hidden from --help, it prints a one-line note and does what the new
    spelling does. The two are one mutually exclusive group, so that giving both is refused
    (and, where the option is required, either one satisfies it)."""
    renamed = next(r for r in RENAMED if (r.command, r.new) == (command, new))
    group = parser.add_mutually_exclusive_group(required=kwargs.pop("required", False))
    target = group.add_argument(new, **kwargs)
    switch = renamed.value is not None
    group.add_argument(renamed.old, action=_OldSpelling, renamed=renamed, target=target,
                       dest=target.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                       nargs=0 if switch else target.nargs, type=None if switch else target.type,
                       choices=None if switch else target.choices,
                       metavar=None if switch else target.metavar)
    return target


def spelt_before_renames(argv: list[str]) -> list[str]:
    """`sarcograde ARGV` as the previous version spelt it (RENAMED's new options back to their
    old spellings), so that a study step recorded then is recognised as the same command."""
    for renamed in RENAMED:
        words = renamed.command.split()
        if argv[:len(words)] == words:
            new = [renamed.new] if renamed.value is None else [renamed.new, renamed.value]
            argv = _replaced(argv, new, [renamed.old])
    return argv


def _replaced(argv: list[str], tokens: list[str], by: list[str]) -> list[str]:
    """`argv` with every run of `tokens` replaced by `by`."""
    out, i = [], 0
    while i < len(argv):
        if argv[i:i + len(tokens)] == tokens:
            out += by
            i += len(tokens)
        else:
            out.append(argv[i])
            i += 1
    return out


def named_paths(values: list[str], flag: str) -> dict[str, Path]:
    """The `SEQ=PATH` values of a repeatable option (e.g. `--run T2FS=runs/t2`) as
    {SEQ: PATH}, in the order given; a name given twice is a one-line error."""
    out: dict[str, Path] = {}
    for value in values:
        name, path = split_assignment(value, flag, "SEQ=PATH")
        if name in out:
            raise SarcogradeError(f"{flag} names sequence {name} twice")
        out[name] = Path(path)
    return out
