"""The `annotator` command: one module per command group."""

import click


def stderr(message: str) -> None:
    """One line to standard error: what every command says besides its results."""
    click.echo(message, err=True)
