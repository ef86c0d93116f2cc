"""Every operations command answers --help (exit 0) and a wrong call exits non-zero."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sagamesh.cli import app

COMMANDS = [
    (["worker"], "SIGTERM"),
    (["config", "check"], "secrets masked"),
    (["bench", "serializers"], "encode and decode"),
    (["dlq", "list"], "dead letters"),
    (["dlq", "show"], "decoded event"),
    (["dlq", "replay"], "original topic"),
    (["dlq", "purge"], "for good"),
    (["sagas", "list"], "non-terminal"),
    (["sagas", "show"], "its steps"),
    (["sagas", "cancel"], "compensated"),
]


@pytest.mark.parametrize(("command", "phrase"), COMMANDS, ids=[" ".join(c) for c, _ in COMMANDS])
def test_help(command: list[str], phrase: str) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert phrase in " ".join(result.output.split())


@pytest.mark.parametrize("command", [["dlq", "show"], ["sagas", "cancel", "x"], ["worker"],
                                     ["config", "check"], ["dlq", "nope"]])
def test_missing_arguments_exit_2(command: list[str]) -> None:
    assert CliRunner().invoke(app, command).exit_code == 2


def test_groups_list_their_commands() -> None:
    runner = CliRunner()
    for group, names in (("dlq", ["list", "show", "replay", "purge"]),
                         ("sagas", ["list", "show", "cancel"]), ("config", ["check"]),
                         ("bench", ["serializers"])):
        result = runner.invoke(app, [group, "--help"], terminal_width=200)
        assert result.exit_code == 0
        assert all(name in result.output for name in names)
