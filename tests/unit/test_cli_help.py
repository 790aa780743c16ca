"""Every verb's --help reads at 80 columns: no sentence broken where it does not end."""

from __future__ import annotations

import inspect

import click
import pytest
import typer
from deeprig.cli import app
from typer.testing import CliRunner


def verbs(command: click.Command, path: tuple[str, ...] = ()):
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        yield path, command
        return
    for name, sub in subcommands.items():
        yield from verbs(sub, (*path, name))


VERBS = dict(verbs(typer.main.get_command(app)))


@pytest.mark.parametrize("path", sorted(VERBS), ids=" ".join)
def test_help_lines_are_broken_only_where_the_docstring_breaks_them(path):
    # Typer keeps the docstring's line breaks after its first paragraph; a line wider than
    # the 78 columns the help panel has at 80 would be wrapped again, leaving a stub line.
    paragraphs = inspect.cleandoc(VERBS[path].help or "").split("\n\n")[1:]
    too_wide = [line for p in paragraphs for line in p.splitlines() if len(line) > 78]
    assert too_wide == []
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0 and all(len(line) <= 80 for line in result.output.splitlines())
