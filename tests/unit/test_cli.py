"""relay/cli.py: the command table, help, and that a command loads only its own module."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from relay import cli


def test_every_command_registers_under_its_name() -> None:
    parser = cli.build_parser()  # every command's module: the table and the modules agree
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(commands.choices) == list(cli.COMMANDS)
    for name, sub in commands.choices.items():
        assert sub.prog == f"dane-relay {name}"


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    assert f"dane-relay {command}" in capsys.readouterr().out


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command, (_, summary) in cli.COMMANDS.items():
        assert command in out and summary.split()[0] in out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["frobnicate"])
    assert exited.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_a_command_imports_only_its_own_module() -> None:
    """`queue` must not load the delivery engine, the checker or the demo (start-up time)."""
    probe = (
        "import sys\n"
        "from relay import cli\n"
        "try:\n"
        "    cli.main(['queue', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(m for m in ('relay.engine', 'relay.check', 'relay.cli_demo',"
        " 'relay.cli_serve', 'relay.cli_queue') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split()[-1:] == ["relay.cli_queue"], done.stdout
