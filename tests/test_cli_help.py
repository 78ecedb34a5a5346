"""The command line documents itself: every option of every command has help text."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from service.cli import parser


def commands() -> dict[str, argparse.ArgumentParser]:
    top = parser()
    found = {"inbox": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update({f"inbox {name}": sub for name, sub in action.choices.items()})
    return found


def test_every_option_has_help() -> None:
    undocumented = [
        f"{name} {action.dest}"
        for name, command in commands().items()
        for action in command._actions
        if not isinstance(action, argparse._SubParsersAction)
        and (not action.help or action.help == argparse.SUPPRESS)
    ]
    assert undocumented == []
    assert set(commands()) == {"inbox", "inbox serve", "inbox migrate", "inbox tail"}


@pytest.mark.parametrize("argv", [[], ["serve"], ["migrate"], ["tail"]])
def test_python_m_service_help(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: inbox {' '.join(argv)}".rstrip())


def test_workers_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["serve", "--workers", "0"])
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
