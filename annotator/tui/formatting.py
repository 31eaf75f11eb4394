"""Small text helpers shared by the views (no Textual here)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import annotator
from annotator.errors import printable
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


def training_summary(provenance: dict | None) -> str | None:
    """One line from a fine-tuned model's provenance: how much it was trained on and the alpha
    it reached against human labels on held-out items. The provenance comes from the model
    file, so anything missing or of the wrong type is simply left out."""
    if not isinstance(provenance, dict):
        return None
    split = provenance.get("split") if isinstance(provenance.get("split"), dict) else {}
    alphas = provenance.get("validation_alpha")
    parts = []
    if isinstance(split.get("train_count"), int):
        parts.append(f"fine-tuned on {split['train_count']} labelled items")
    if isinstance(alphas, dict) and alphas:
        shown = ", ".join(
            f"{printable(str(k), 40)} {alpha(v)}"
            for k, v in alphas.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        )
        held = split.get("validation_count")
        where = f" on {held} held-out items" if isinstance(held, int) else ""
        if shown:
            parts.append(f"alpha vs human labels{where}: {shown}")
    return "; ".join(parts) or None
