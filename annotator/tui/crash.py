"""What the app leaves behind when it crashes: one line on the terminal and a private report.

Textual's default prints a rich traceback with every frame's local variables, and the locals
of this app hold item text (an item, a row of the table, a prompt). So a crash shows nothing
but the exception's type and where the report is; the report (mode 0600, in the user's state
directory: `$XDG_STATE_HOME/annotator/`, by default `~/.local/state/annotator/`) holds the
exception types and frames (file, line, function) of the error and its causes. No locals and
no messages: an exception's message can quote what it failed on (a KeyError's key, a
markup error's text, a database value), which here may be item text. No Textual here.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path


def state_dir() -> Path:
    """Where crash reports go: `$XDG_STATE_HOME/annotator`, else `~/.local/state/annotator`."""
    base = os.environ.get("XDG_STATE_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "annotator"


def _type_name(error: BaseException) -> str:
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _chain(error: BaseException) -> list[tuple[str, BaseException]]:
    """The error, then what it wraps (a failed worker's error, a group's members) and what
    caused it, each once."""
    out: list[tuple[str, BaseException]] = []
    seen: set[int] = set()
    todo: list[tuple[str, BaseException]] = [("error", error)]
    while todo:
        how, current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        out.append((how, current))
        inner = getattr(current, "error", None)  # textual.worker.WorkerFailed
        if isinstance(inner, BaseException):
            todo.append(("raised in the worker", inner))
        if isinstance(current, BaseExceptionGroup):
            todo += [("in the group", e) for e in current.exceptions]
        if current.__cause__ is not None:
            todo.append(("caused by", current.__cause__))
        elif current.__context__ is not None and not current.__suppress_context__:
            todo.append(("while handling", current.__context__))
    return out


def report_text(error: BaseException) -> str:
    """The report: types and frames only (see the module's docstring)."""
    from annotator import __version__

    lines = [
        f"annotator {__version__} app crash, {time.strftime('%Y-%m-%d %H:%M:%S %z')}, "
        f"Python {sys.version.split()[0]}",
        "Exception messages and local variables are left out: they may hold item text.",
        "",
    ]
    for how, current in _chain(error):
        lines.append(f"{how}: {_type_name(current)}")
        for frame in traceback.extract_tb(current.__traceback__):
            lines.append(f"  {frame.filename}:{frame.lineno} in {frame.name}")
    return "\n".join(lines) + "\n"


def _private_file(folder: Path) -> tuple[Path, int]:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        path = folder / f"crash-{stamp}-{os.getpid()}{f'-{n}' if n else ''}.txt"
        try:
            return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: too many crash reports this second")


def write_report(error: BaseException) -> Path:
    """Write the report to a new file only this user may read; its path. In the state
    directory, else (not writable) in the system's temporary folder."""
    text = report_text(error).encode("utf-8", "backslashreplace")
    try:
        path, fd = _private_file(state_dir())
    except OSError:
        fd, name = tempfile.mkstemp(prefix="annotator-crash-", suffix=".txt")  # mode 0600
        path = Path(name)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # whatever the umask
        handle.write(text)
    return path


def crash_line(error: BaseException) -> str:
    """Write the report; the one line the terminal gets (the type and the report's path)."""
    kind = _type_name(error)
    inner = getattr(error, "error", None)
    if isinstance(inner, BaseException):  # a failed worker: name what it raised
        kind = f"{_type_name(inner)} in a worker"
    try:
        where = f"report (no item text): {write_report(error)}"
    except OSError as exc:
        where = f"no report written ({exc.strerror or type(exc).__name__})"
    return f"annotator: the app stopped on an internal error ({kind}); {where}"
