"""Options renamed so that one name means one thing across commands: the new spelling is the one
--help shows; the old one, hidden, still works for one version with a one-line note on stderr,
and the two together are refused. A study step recorded with an old spelling is recognised."""

from __future__ import annotations

import re

import pytest

from sarcograde import cli
from sarcograde.options import RENAMED, spelt_before_renames

# The smallest command line of each command that has a renamed option.
BASE = {"train": ["train", "cache", "--out", "run"],
        "explain": ["explain", "run", "cache"],
        "fusion apply": ["fusion", "apply", "model.json", "--out", "DL-fusion.csv"],
        "demo": ["demo"]}
# A value of each renamed option that takes one.
VALUE = {"--slice-logits": "predictions.csv", "--patient-ids": "A,B",
         "--sequence": "T1FSGd=a.csv", "--max-epochs": "3", "--threads-per-fold": "2"}
IDS = [f"{r.command} {r.old}" for r in RENAMED]


def spellings(renamed) -> tuple[list[str], list[str]]:
    """The renamed option with its value, in the new and in the old spelling."""
    if renamed.value is not None:
        return [renamed.new, renamed.value], [renamed.old]
    return [renamed.new, VALUE[renamed.new]], [renamed.old, VALUE[renamed.new]]


def parse(argv: list[str]) -> dict:
    return vars(cli.build_parser(argv[0]).parse_args(argv))


def note(renamed) -> str:
    use = renamed.new if renamed.value is None else f"{renamed.new} {renamed.value}"
    return (f"sarcograde {renamed.command}: note: {renamed.old} is deprecated; use {use} (the "
            "old spelling goes in the next version)\n")


@pytest.mark.parametrize("renamed", RENAMED, ids=IDS)
def test_the_old_spelling_does_what_the_new_one_does_with_one_note(renamed, capsys):
    new, old = spellings(renamed)
    base = BASE[renamed.command]
    given = new[1]
    assert any(str(v) == given or v == [given] for v in parse([*base, *new]).values())
    assert capsys.readouterr().err == ""
    assert parse([*base, *old]) == parse([*base, *new])
    assert capsys.readouterr().err == note(renamed)
    parse([*base, *old, *old])  # repeated: still one note
    assert capsys.readouterr().err == note(renamed)


@pytest.mark.parametrize("renamed", RENAMED, ids=IDS)
def test_the_two_spellings_together_are_refused(renamed, capsys):
    new, old = spellings(renamed)
    with pytest.raises(SystemExit) as exit_:
        parse([*BASE[renamed.command], *old, *new])
    assert exit_.value.code == 2
    assert f"argument {renamed.new}: not allowed with argument {renamed.old}" in (
        capsys.readouterr().err)


@pytest.mark.parametrize("renamed", RENAMED, ids=IDS)
def test_help_shows_only_the_new_spelling(renamed, capsys):
    words = renamed.command.split()
    with pytest.raises(SystemExit):
        cli.build_parser(words[0]).parse_args([*words, "--help"])
    shown = capsys.readouterr().out
    flag = r"(?<![\w-]){}(?![\w-])"
    assert re.search(flag.format(re.escape(renamed.new)), shown)
    assert not re.search(flag.format(re.escape(renamed.old)), shown)


@pytest.mark.parametrize("argv, before", [
    (["fusion", "apply", "m.json", "--sequence", "A=a.csv", "--sequence", "B=b.csv"],
     ["fusion", "apply", "m.json", "--predictions", "A=a.csv", "--predictions", "B=b.csv"]),
    (["explain", "run", "cache", "--slice-logits", "p.csv", "--patient-ids", "A"],
     ["explain", "run", "cache", "--predictions", "p.csv", "--patients", "A"]),
    (["train", "cache", "--precision", "bf16"], ["train", "cache", "--bf16"]),
    (["train", "cache", "--precision", "fp32"], ["train", "cache", "--precision", "fp32"]),
    # the same words elsewhere are not renamed options
    (["evaluate", "--predictions", "DL-T2FS=a.csv", "--sequence", "T2FS"],
     ["evaluate", "--predictions", "DL-T2FS=a.csv", "--sequence", "T2FS"]),
    (["check", "m.csv", "--sequence", "T2FS"], ["check", "m.csv", "--sequence", "T2FS"]),
])
def test_a_command_line_as_the_previous_version_spelt_it(argv, before):
    assert spelt_before_renames(argv) == before
