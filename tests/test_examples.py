"""Every example under examples/ runs as written: the setup commands its header documents make
every path it names.

An example's header documents its setup as comment lines `#   sarcograde COMMAND ...`, run from
the repository root; the line `#   sarcograde study examples/NAME.yaml ...` is the run itself.
The test runs the setup commands (fewer patients) in a copy of the repository's layout, loads
the example with the study loader and checks every manifest, image and mask it leads to.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from sarcograde import cli
from sarcograde.cohort import load_manifest
from sarcograde.errors import SarcogradeError
from sarcograde.study import load_study

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
DOCUMENTED = re.compile(r"^#\s+(sarcograde\s.*?)(?:\s{2,}\(.*)?$")  # a trailing "(remark)" is prose
SETUP_COMMANDS = ("synth",)   # what the test knows how to run without outside data
FEW_PATIENTS = "4"


def documented_commands(example: Path) -> list[list[str]]:
    """The `sarcograde ...` command lines of the example's comments, without `sarcograde`."""
    return [shlex.split(m.group(1))[1:] for line in example.read_text(encoding="utf-8").splitlines()
            if (m := DOCUMENTED.match(line))]


def with_few_patients(argv: list[str]) -> list[str]:
    """`argv` with `--patients N` made small, so that the test stays fast."""
    argv = list(argv)
    if "--patients" in argv:
        argv[argv.index("--patients") + 1] = FEW_PATIENTS
    return argv


def named_paths(example: Path) -> list[Path]:
    """Every file the example leads to: its manifests and the images and masks they name.
    A missing manifest is the loader's one-line error."""
    study = load_study(example)
    paths = []
    for manifest in study.cohorts.values():
        cohort = load_manifest(manifest, strict=True)
        for seq in study.sequences:
            assert seq in cohort.sequences, f"{manifest}: no image_{seq} column"
        paths.append(manifest)
        paths += [p for patient in cohort for p in (*patient.images.values(),
                                                      *patient.masks.values())]
    return paths


def copy_of(example: Path, root: Path) -> Path:
    """The example at its place in a copy of the repository's layout under `root`."""
    copy = root / example.relative_to(REPO)
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(example, copy)
    return copy


def test_there_are_examples():
    assert EXAMPLES, "no examples/*.yaml"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_an_example_documents_its_setup_and_how_to_run_it(example):
    commands = documented_commands(example)
    runs = [argv for argv in commands if argv[0] == "study"]
    assert runs, f"{example.name}: no `sarcograde study ...` line says how to run it"
    for argv in runs:
        assert argv[1] == str(example.relative_to(REPO)), \
            f"{example.name}: the study line names {argv[1]}, not the example's path"
    for argv in commands:
        assert argv[0] in (*SETUP_COMMANDS, "study"), \
            f"{example.name}: this test cannot run the setup command `sarcograde {argv[0]}`"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_an_example_names_paths_that_exist_after_its_setup(example, tmp_path, monkeypatch):
    copy = copy_of(example, tmp_path)
    monkeypatch.chdir(tmp_path)   # the commands are documented from the repository root
    for argv in documented_commands(example):
        if argv[0] != "study":
            assert cli.main(with_few_patients(argv)) == 0, f"sarcograde {shlex.join(argv)}"
    paths = named_paths(copy)
    assert paths
    missing = [str(p) for p in paths if not p.exists()]
    assert not missing, f"{example.name} names missing files: {missing[:5]}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_without_its_setup_an_example_names_missing_manifests(example, tmp_path):
    # The check above bites: the paths an example names exist only once its setup has run.
    with pytest.raises(SarcogradeError, match="manifest not found"):
        named_paths(copy_of(example, tmp_path))
