"""The `sarcograde` command: registration, help, and errors as one line with an exit code."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

from sarcograde import __version__, cli
from sarcograde.errors import SarcogradeError

PIPELINE = ["check", "synth", "import", "preprocess", "train", "predict", "radiomics", "fusion",
            "evaluate", "export", "recalibrate", "grade", "explain", "report", "study", "demo"]


def test_commands_are_registered_in_pipeline_order():
    names = [name for name, _, _ in cli.COMMANDS]
    assert names[0] == "check"
    assert set(names) <= set(PIPELINE)
    assert names == sorted(names, key=PIPELINE.index)


@pytest.mark.parametrize("name, module_name, help_text", cli.COMMANDS,
                         ids=[c[0] for c in cli.COMMANDS])
def test_every_command_has_help_from_its_module(name, module_name, help_text, capsys):
    module = importlib.import_module(module_name)
    assert callable(module.add_arguments) and callable(module.run)
    assert module.__doc__ and module.__doc__.strip()
    with pytest.raises(SystemExit) as info:
        cli.main([name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sarcograde {name}")
    assert module.__doc__.strip().split()[0] in out


@pytest.fixture
def fake_stage(monkeypatch):
    """A stage whose run() does what the test puts into `behaviour`."""
    behaviour = {}
    module = types.ModuleType("fake_stage", "A stage for testing the command line.")
    module.add_arguments = lambda parser: parser.add_argument("value")
    module.run = lambda args: behaviour["run"](args)
    monkeypatch.setitem(sys.modules, "fake_stage", module)
    monkeypatch.setattr(cli, "COMMANDS", [("fake", "fake_stage", "a fake stage")])
    return behaviour


def test_exit_code_of_run_is_returned(fake_stage):
    fake_stage["run"] = lambda args: int(args.value)
    assert cli.main(["fake", "0"]) == 0
    assert cli.main(["fake", "3"]) == 3
    fake_stage["run"] = lambda args: None
    assert cli.main(["fake", "x"]) == 0


def test_user_error_is_one_line_without_traceback(fake_stage, capsys):
    def fail(args):
        raise SarcogradeError("empty mask", patient="STS_002", path=Path("m.nii.gz"), exit_code=2)

    fake_stage["run"] = fail
    assert cli.main(["fake", "x"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "sarcograde fake: error: STS_002: m.nii.gz: empty mask\n"
    assert captured.out == ""


def test_interrupt_says_how_to_resume(fake_stage, capsys):
    def interrupt(args):
        raise KeyboardInterrupt

    fake_stage["run"] = interrupt
    assert cli.main(["fake", "x"]) == 130
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err


def test_usage_errors_exit_2(fake_stage, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli.main(["nonsense"])
    assert info.value.code == 2
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("sarcograde")
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable}; install the package (make test)")
    result = subprocess.run([str(script), "--version"], capture_output=True, encoding="utf-8",
                            timeout=120)
    assert result.returncode == 0
    assert result.stdout.strip() == f"sarcograde {__version__}"


# Each stage that writes, with the arguments that name its output (OUT) and the lock it takes
# there; the other arguments need not exist: the lock is taken before any of them is read.
WRITERS = [
    ("check", ["check", "manifest.csv", "--out", "OUT"], ".sarcograde.lock"),
    ("synth", ["synth", "OUT"], ".sarcograde.lock"),
    ("preprocess", ["preprocess", "manifest.csv", "--out", "OUT"], ".sarcograde.lock"),
    ("train", ["train", "cache", "--out", "OUT"], ".sarcograde.lock"),
    ("evaluate", ["evaluate", "p.csv", "--manifest", "m.csv", "--out", "OUT"], ".sarcograde.lock"),
    ("explain", ["explain", "run", "cache", "--out", "OUT"], ".sarcograde.lock"),
    ("grade", ["grade", "--model", "pkg", "--out", "OUT"], ".sarcograde.lock"),
    ("demo", ["demo", "--out", "OUT"], ".sarcograde.lock"),
    ("predict", ["predict", "run", "cache", "--out", "OUT/p.csv"], ".p.csv.lock"),
    ("report", ["report", "eval", "--out", "OUT/r.html"], ".r.html.lock"),
    ("import", ["import", "tcia-sts", "root", "--out", "OUT/m.csv"], ".m.csv.lock"),
    ("export", ["export", "--study", "study", "--out", "OUT/pkg"], ".pkg.lock"),
]


def _argv(argv, out) -> list[str]:
    return [a.replace("OUT", str(out)) for a in argv]


@pytest.mark.parametrize("name, argv, lock", WRITERS, ids=[w[0] for w in WRITERS])
def test_second_writer_of_an_output_stops_naming_the_lock(tmp_path, capsys, name, argv, lock):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / lock, "w") as held:          # another command's lock, taken independently
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert cli.main(_argv(argv, out)) == 1
    assert capsys.readouterr().err == (
        f"sarcograde {name}: error: {out / lock}: another sarcograde command is writing here (it "
        "holds this lock); wait for it to finish\n")
    assert sorted(p.name for p in out.iterdir()) == [lock]   # no work was done


@pytest.mark.parametrize("name, argv, lock", WRITERS[:3], ids=[w[0] for w in WRITERS[:3]])
def test_out_naming_an_existing_file_is_one_line(tmp_path, capsys, name, argv, lock):
    out = tmp_path / "taken"
    out.write_text("a user's file")
    assert cli.main(_argv(argv, out)) == 1
    assert capsys.readouterr().err == \
        f"sarcograde {name}: error: {out}: the output folder is an existing file\n"
    assert out.read_text() == "a user's file"


def _refuse_lock_file(monkeypatch, errno_code: int) -> None:
    """os.open of a lock file fails as on a read-only mount (root ignores chmod)."""
    import os

    real_open = os.open

    def fake_open(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(errno_code, os.strerror(errno_code), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


@pytest.mark.parametrize("name, argv, lock", WRITERS[:3], ids=[w[0] for w in WRITERS[:3]])
def test_unwritable_output_folder_is_found_before_the_work(tmp_path, capsys, monkeypatch, name,
                                                           argv, lock):
    import errno

    out = tmp_path / "out"
    out.mkdir()
    _refuse_lock_file(monkeypatch, errno.EROFS)
    assert cli.main(_argv(argv, out)) == 1
    assert capsys.readouterr().err == (f"sarcograde {name}: error: {out}: the output folder is "
                                       "not writable (Read-only file system)\n")
    assert list(out.iterdir()) == []


def test_read_only_folder_without_root(tmp_path, capsys):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only (chmod 555) folder; the EROFS test covers it")
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert cli.main(["synth", str(out)]) == 1
    finally:
        out.chmod(0o755)
    assert capsys.readouterr().err == (f"sarcograde synth: error: {out}: the output folder is "
                                       "not writable (Permission denied)\n")


def test_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    import errno

    images = tmp_path / "data"
    images.mkdir()
    manifest = images / "manifest.csv"
    manifest.write_text("patient_id,image_T1,mask_T1\nP1,nope.nii.gz,nope.nii.gz\n")
    real_write = Path.write_bytes

    def full(self, data):
        if ".tmp" in self.name:  # every artifact is written through a temporary file
            real_write(self, data[:10])
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "out"
    assert cli.main(["check", str(manifest), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (f"sarcograde check: error: {out / 'qa.csv'}: No space left "
                                       "on device; free some space and rerun the same command\n")
    assert not out.exists()        # neither qa.csv nor a temporary file: the new folder is gone


def test_long_warning_stays_one_line_off_a_terminal(capsys):
    from sarcograde.console import warn

    message = "P00: " + "/a/very/long/path" * 20 + ": no tumour slices, left out"
    warn(message)
    assert capsys.readouterr().err == f"warning: {message}\n"
