"""The `annotator` command: the group, the lazily registered train and export, and `main`.

Each command group lives in its own module of this package, and each subcommand imports what
it needs when it runs.

Errors the user can fix (a bad file, row or key) are `AnnotatorError`s and print as one line;
item text never reaches the terminal except through `results`, which exists to show it.
"""

from __future__ import annotations

import importlib
import sys

import click

from annotator import __version__
from annotator.cli.annotate import annotate, results
from annotator.cli.formats import import_file
from annotator.cli.info import doctor, inspect, tui
from annotator.cli.kit import kit
from annotator.cli.project import project
from annotator.cli.reviews import agree, calibrate, review
from annotator.errors import AnnotatorError

# The GPU-box commands, imported only when named or listed (`annotator --help`). Their modules
# import no part of their extras, so the core never imports torch.
LAZY_COMMANDS = {
    "train": "annotator.train.cli:train_command",
    "export": "annotator.export.cli:export_command",
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, name = LAZY_COMMANDS[cmd_name].split(":")
            return getattr(importlib.import_module(module), name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="annotator")
def cli() -> None:
    """Offline rubric annotation with a small model in one GGUF file.

    Label a data file against a rubric with llama.cpp, spot-check the labels, and measure
    agreement (Krippendorff's alpha) between the model and reviewers, per dimension.
    Nothing here uses the network.
    """


for _command in (
    annotate,
    results,
    import_file,
    review,
    calibrate,
    agree,
    doctor,
    inspect,
    tui,
    kit,
    project,
):
    cli.add_command(_command)
cli.add_command(review, name="reviews")  # `annotator reviews export` works too


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except AnnotatorError as exc:
        click.echo(f"annotator: error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
