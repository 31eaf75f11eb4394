"""Every `--help` page of `annotator` against a stored snapshot, 80 columns wide.

The command tree is walked (the group, every command and subcommand; an alias such as
`reviews` once, under its first name), so a new command is covered without editing this file.
The pages are plain text files in tests/__snapshots__/test_help_pages/. After changing a
command's options or help text, regenerate them all (stale pages are removed) and read the diff:

    .venv/bin/python -m pytest tests/test_help_pages.py --snapshot-update

(Not named test_help.py: syrupy would take the app's snapshot test_tui_snapshots/test_help.svg
for one of this module's and delete it on --snapshot-update.)
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from annotator.cli.main import cli


def command_paths(
    command: click.Command = cli, path: tuple[str, ...] = (), seen: set[int] | None = None
) -> list[tuple[str, ...]]:
    seen = set() if seen is None else seen
    seen.add(id(command))
    found = [path]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and id(sub) not in seen:
                found += command_paths(sub, (*path, name), seen)
    return found


class HelpPage(SingleFileSnapshotExtension):
    _write_mode = WriteMode.TEXT
    _file_extension = "txt"


@pytest.mark.parametrize("path", command_paths(), ids=lambda path: "-".join(("annotator", *path)))
def test_help(path, snapshot):
    result = CliRunner().invoke(
        cli, [*path, "--help"], prog_name="annotator", terminal_width=80, env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    assert result.output == snapshot.use_extension(HelpPage)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "a.csv", "--rubric", "r.toml"], "Error: Missing option '--out'."),
        (
            ["train", "--data", "a.csv", "--rubric", "r.toml", "--out", "run", "--warmup", "1"],
            "Error: Invalid value for '--warmup': 1.0 is not in the range 0<=x<1.",
        ),
        (
            ["export", "run/merged", "--out", "m.gguf", "--quant", "q3"],
            "Error: Invalid value for '--quant': 'q3' is not one of 'q4_k_m', 'q5_k_m', 'q8_0', 'f16'.",
        ),
    ],
)
def test_usage_errors_are_click_errors(args, message):
    """train and export report usage errors as the other commands do: exit status 2, one
    `Error:` line after the usage, and nothing run."""
    result = CliRunner().invoke(cli, args, prog_name="annotator", terminal_width=80)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    usage = {"train": "[OPTIONS]", "export": "[OPTIONS] MERGED"}[args[0]]
    assert lines[0] == f"Usage: annotator {args[0]} {usage}"
    assert lines[-1] == message and sum(line.startswith("Error") for line in lines) == 1
