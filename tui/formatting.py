"""Small text helpers shared by the views (no Textual here)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import annotator
from annotator.rubric import Value


def size(n_bytes: int) -> str:
    amount = float(n_bytes)
    for unit in ("B", "KB", "MB"):
        if amount < 1000:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} GB"


def duration(seconds: float | None) -> str:
    """H:MM:SS or M:SS; '-' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def shown_path(path: Path | str | None) -> str:
    """A path as the user would type it: relative to the working directory when inside it.

    Relative paths also keep screenshots free of machine-specific absolute paths.
    """
    if path is None:
        return "-"
    path = Path(path)
    samples = Path(annotator.__file__).resolve().parent / "samples"
    try:
        return "(bundled sample) " + str(path.resolve().relative_to(samples))
    except (ValueError, OSError):
        pass
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        home = Path.home()
        try:
            return "~" + os.sep + str(path.resolve().relative_to(home))
        except (ValueError, OSError):
            return str(path)


def value(v: Value | None) -> str:
    return "-" if v is None else str(v)


def alpha(a: float | None) -> str:
    # Three decimals: the same rounding as `annotator agree`.
    return "-" if a is None else f"{a:.3f}"
