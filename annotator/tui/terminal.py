"""A terminal driver that keeps drawing while llama.cpp loads a model.

llama-cpp-python silences llama.cpp while it loads a model by pointing file descriptors 1
and 2 at /dev/null (`suppress_stdout_stderr`). Textual draws on fd 2, so every frame written
during a load (the project's model header, the engine at the start of annotation) was lost,
leaving parts of the screen blank until they happened to change again. This driver draws on
a private duplicate of fd 2 instead, which the redirection does not touch.
"""

from __future__ import annotations

import os
import sys

from textual.drivers.linux_driver import LinuxDriver


class PrivateFdDriver(LinuxDriver):
    def __init__(
        self, app, *, debug: bool = False, mouse: bool = True, size: tuple[int, int] | None = None
    ) -> None:
        super().__init__(app, debug=debug, mouse=mouse, size=size)
        terminal = sys.__stderr__
        assert terminal is not None
        self._file = open(
            os.dup(terminal.fileno()),
            "w",
            encoding=terminal.encoding or "utf-8",
            errors="backslashreplace",
        )


def driver_class() -> type | None:
    """The private-fd driver where Textual would use the Linux (POSIX) driver, else None."""
    if sys.platform == "win32" or sys.__stderr__ is None:
        return None
    try:
        sys.__stderr__.fileno()
    except (OSError, ValueError):
        return None
    return PrivateFdDriver
