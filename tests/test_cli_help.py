"""Every command's --help shows its help texts whole: rich markup must not swallow `[...]`
(issue 30: `pip install 'mutualctr[export]'` was printed as `pip install 'mutualctr'`)."""

from __future__ import annotations

import re

import pytest
import typer.rich_utils
from typer.main import get_command
from typer.testing import CliRunner

from mutualctr.cli import app


def _commands(cmd, path: tuple[str, ...] = ()):
    yield path, cmd
    if getattr(cmd, "commands", None):  # a group (typer's own click)
        for name, sub in cmd.commands.items():
            yield from _commands(sub, path + (name,))


def _norm(text: str) -> str:
    """Box characters and runs of whitespace out: what a reader sees, word by word."""
    return " ".join(re.sub(r"[│─╭╮╰╯]", " ", text).split())


def _declared(text: str) -> str:
    """A help text as written in cli.py, as it should read: markup escapes (`\\[`) removed."""
    return _norm(text.replace("\\[", "["))


COMMANDS = list(_commands(get_command(app)))
assert len(COMMANDS) > 10  # every command and subcommand


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 2000)  # no wrapping inside a help text


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "mutualctr" for p, _ in COMMANDS])
def test_every_help_text_is_rendered_whole(path, cmd, wide):
    res = CliRunner().invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    shown = _norm(res.output)
    texts = [p.help for p in cmd.params if getattr(p, "help", None) and not getattr(p, "hidden", False)]
    if cmd.help:
        texts += [p for p in cmd.help.split("\n\n") if p.strip()]
    for text in texts:
        assert _declared(text) in shown, f"{' '.join(path)} --help lost part of: {text!r}"


def test_the_extras_to_install_are_named(wide):
    runner = CliRunner()
    for path, extra in ((["export"], "mutualctr[export]"), (["train"], "mutualctr[tensorboard]"),
                        (["mutual"], "mutualctr[tensorboard]")):
        out = _norm(runner.invoke(app, [*path, "--help"]).output)
        assert f"pip install '{extra}'" in out, (path, out)
