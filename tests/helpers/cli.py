"""The `annotator` command in this process: as `main` runs it (an `AnnotatorError` is one
line on stderr, exit 1) without the cost of starting Python and importing the package again."""

from __future__ import annotations

import sys
from unittest import mock

from annotator.cli.main import main


def annotator(capsys, *args: str) -> tuple[int, str]:
    """(exit code, stderr) of `annotator ARGS`."""
    capsys.readouterr()  # what earlier steps printed is not this command's
    code = 0
    with mock.patch.object(sys, "argv", ["annotator", *args]):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err
