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

PIPELINE = ["check", "synth", "import", "preprocess", "train", "predict", "fusion", "evaluate",
            "explain", "report", "study", "demo"]


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
