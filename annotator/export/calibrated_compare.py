"""Which calibrated file to ship: `train`'s comparison of the fine-tuned file and the base, each
with its head, on the validation items (export.calibrated computes the labels), and the lines
it prints. No model here: the figures in, the verdict and its words out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from annotator.rubric import Rubric


def mean_alpha(alpha: Mapping[str, float | None]) -> float | None:
    """The mean of the defined alphas; None when none is defined."""
    defined = [a for a in alpha.values() if a is not None]
    return sum(defined) / len(defined) if defined else None


def compare(tuned: Mapping[str, float | None], base: Mapping[str, float | None]) -> dict:
    """Mean alpha of each side over the dimensions where both are defined, and the verdict:
    `better` is "fine_tuned" only when it is strictly higher (a tie ships the base)."""
    dims = [d for d in tuned if tuned[d] is not None and base.get(d) is not None]
    if not dims:
        return {
            "dimensions": [],
            "fine_tuned": None,
            "base": None,
            "difference": None,
            "better": None,
        }
    t = sum(tuned[d] for d in dims) / len(dims)  # type: ignore[misc]
    b = sum(base[d] for d in dims) / len(dims)  # type: ignore[misc]
    return {
        "dimensions": dims,
        "fine_tuned": t,
        "base": b,
        "difference": t - b,
        "better": "fine_tuned" if t > b else "base",
    }


def difference_interval(
    rubric: Rubric,
    dims: Sequence[str],
    tuned: Mapping[str, Sequence],
    base: Mapping[str, Sequence],
    human: Mapping[str, Sequence],
    resamples: int = 1000,
    seed: int = 0,
) -> list[float] | None:
    """The 95% paired bootstrap interval of mean alpha (fine-tuned) - mean alpha (base) over
    `dims`: the same items are drawn for both files (labels: one list per dimension, items in
    the same order). None when fewer than half the resamples give every alpha."""
    from annotator.agreement import alpha, domain, encode

    if not dims or resamples <= 0:
        return None
    tables = {}
    for dim in (d for d in rubric.dimensions if d.name in dims):
        rows = [[encode(dim, v) for v in labels[dim.name]] for labels in (tuned, base, human)]
        tables[dim.name] = (dim, np.array(rows, dtype=float))
    n = len(human[dims[0]])
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(resamples):
        pick = rng.integers(0, n, size=n)
        diffs = []
        for dim, table in tables.values():
            sample = table[:, pick]
            t = alpha(sample[[0, 2]], dim.scale, domain(dim))
            b = alpha(sample[[1, 2]], dim.scale, domain(dim))
            if t is None or b is None:
                break
            diffs.append(t - b)
        else:
            found.append(sum(diffs) / len(diffs))
    if len(found) < resamples / 2:
        return None
    return [float(x) for x in np.percentile(found, [2.5, 97.5])]


def comparison_line(
    comparison: Mapping[str, Any], items: int, names: Mapping[str, str | None]
) -> str:
    """The one line `train` prints: which file is better on the validation items, by how much.
    `names`: the file written for each side ("fine_tuned", "base"), None where none was."""
    if comparison["better"] is None:
        return (
            f"calibrated: no dimension has a defined alpha on both sides on the {items} "
            "validation items; nothing to compare"
        )
    t, b, diff = comparison["fine_tuned"], comparison["base"], comparison["difference"]
    interval = comparison.get("interval")
    spread = f"; 95% interval {interval[0]:+.3f} to {interval[1]:+.3f}" if interval else ""
    figures = f"mean alpha {t:.3f} vs {b:.3f} ({diff:+.3f}{spread}) on {items} validation items"
    if comparison["better"] == "fine_tuned":
        ship = f"ship {names['fine_tuned']}" if names.get("fine_tuned") else "no file written"
        return f"calibrated: the fine-tuned file beats the base, both with heads: {figures}; {ship}"
    written = [n for n in (names.get("fine_tuned"), names.get("base")) if n]
    better = names.get("base") or "the base"
    return (
        "calibrated: the fine-tuned file with its head does NOT beat the base with a head: "
        f"{figures}; "
        + ("both written, " if len(written) == 2 else "")
        + f"{better} is the better one"
    )


def refused_line(reason: str, report: str, items: int, names: Mapping[str, str | None]) -> str:
    """The one line `train` prints when export's drift check refused the fine-tuned adapter."""
    base = names.get("base")
    ship = f"ship {base}" if base else "no file written for the base either"
    return (
        f"calibrated: the fine-tuned adapter was refused by export's drift check ({reason}; "
        f"see {report}), so only the base got a head on the {items} validation items; {ship}"
    )


def side_line(what: str, side: Mapping[str, Any], run_dir: Path) -> str:
    """One line on one side: its file (or why none) and its alpha per dimension."""
    alphas = ", ".join(
        f"{k} {'undefined' if v is None else f'{v:.3f}'}" for k, v in side["alpha"].items()
    )
    file = side["file"]
    if file is None:
        return f"{what} + head: alpha {alphas}; no file ({side['note']})"
    size = file["size"]
    shown = f"{size / 1e3:.0f} kB" if size < 1e6 else f"{size / 1e6:.1f} MB"
    return f"{what} + head: alpha {alphas}; {run_dir / file['name']} ({file['kind']}, {shown})"
