"""The validation curve: every evaluation's losses, alphas and collapse signal.

After each evaluation the whole curve is written again to RUN_DIR/curve.json (for programs)
and RUN_DIR/curve.md (a table to read), so a run that stops half-way still has its curve.
`annotator train` prints a compact table of it (under 80 columns) and, when the kept
checkpoint collapsed, says so in one line and reports an error (`collapse_error`).

Per evaluation and dimension: alpha of the model's own answers (argmax) and of a head's
out-of-fold labels (train.validate), and the share of the commonest label of each (1.0:
every validation item got the same value). Counts and figures only, never item text.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from annotator.calibration.heads import MIN_ITEMS
from annotator.errors import AnnotatorError
from annotator.train.validate import Evaluation

log = logging.getLogger("train")

SELECTION = (
    "not collapsed first, then the highest mean head alpha, then the highest mean argmax "
    "alpha, then the lowest validation loss; exact ties keep the earlier checkpoint; an "
    "undefined mean ranks lowest"
)
MAX_ROWS = 12  # the printed table shows at most this many evaluations (curve.md has all)


def report(result: Evaluation, tag: str) -> None:
    """One evaluation in the log."""
    log.info(
        "validation at step %d (%d items): alpha %s; mean %s; head alpha %s; mean %s; "
        "commonest share %s; loss %.4f%s",
        result.step,
        result.n,
        _pairs(result.alpha, fmt),
        fmt(result.mean_alpha),
        _pairs(result.head_alpha, fmt),
        fmt(result.mean_head_alpha),
        ", ".join(
            f"{name} {share(s)}/{share(result.head_share.get(name))}"
            for name, s in result.share.items()
        ),
        result.val_loss,
        f" [{tag}]" if tag else "",
    )
    if result.collapsed:
        log.warning("validation at step %d: collapsed: %s", result.step, collapsed(result))


def write(
    run_dir: Path,
    history: list[Evaluation],
    kept: Evaluation | None,
    patience: int,
    stopped_early: bool,
) -> None:
    """RUN_DIR/curve.json and RUN_DIR/curve.md, the whole curve so far."""
    record = {
        "selection": SELECTION,
        "patience": patience,
        "stopped_early": stopped_early,
        "kept_step": kept.step if kept else None,
        "collapsed": kept.collapsed if kept else {},
        "evaluations": [{**e.as_dict(), "kept": e is kept} for e in history],
    }
    (run_dir / "curve.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    (run_dir / "curve.md").write_text(markdown(history, kept, stopped_early), encoding="utf-8")


def markdown(history: list[Evaluation], kept: Evaluation | None, stopped_early: bool) -> str:
    dims = list(history[0].alpha) if history else []
    lines = [
        "# Validation curve",
        "",
        f"{history[0].n if history else 0} validation items. Per dimension: alpha of the "
        "model's own answers / of a head's out-of-fold labels, and the share of the commonest "
        "label (argmax / head; 1.00 = one value for every item). Step 0: before training.",
        "",
        f"Kept: {f'step {kept.step}' if kept else 'none yet'} ({SELECTION}).",
    ]
    if history and history[0].n < MIN_ITEMS:
        lines += [
            "",
            f"Too few validation items for a head or to call a collapse ({MIN_ITEMS} needed).",
        ]
    if stopped_early:
        lines += ["", "Training stopped early: no better evaluation within the patience."]
    if kept and kept.collapsed:
        lines += ["", f"**Collapsed** (one value for every item): {collapsed(kept)}."]
    header = ["step", "epoch", "train loss", "val loss"]
    for name in dims:
        header += [f"{name} alpha", f"{name} commonest"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in history:
        row = [
            f"{e.step}{' (kept)' if e is kept else ''}",
            f"{e.epoch:.2f}",
            loss(e.train_loss),
            loss(e.val_loss),
        ]
        for name in dims:
            row.append(f"{fmt(e.alpha.get(name))} / {fmt(e.head_alpha.get(name))}")
            row.append(f"{share(e.share.get(name))} / {share(e.head_share.get(name))}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def table(history: list[Evaluation], kept: Evaluation | None) -> list[str]:
    """The curve for the terminal: means over dimensions and the largest commonest share,
    one row per evaluation (at most MAX_ROWS: the first, the kept, the last and evenly
    spaced others), then the kept checkpoint per dimension."""
    if not history:
        return []
    rows = _rows(history, kept)
    lines = [
        "validation curve (alpha: mean over dimensions; top: largest one-label share)",
        " step  epoch  train loss  val loss  alpha argmax  alpha head  top argmax/head",
    ]
    for e in rows:
        lines.append(
            f"{e.step:5d}  {e.epoch:5.2f}  {loss(e.train_loss):>10}  {loss(e.val_loss):>8}  "
            f"{fmt(e.mean_alpha):>12}  {fmt(e.mean_head_alpha):>10}  "
            f"{share(_top(e.share)):>6}/{share(_top(e.head_share)):<4}"
            + ("  kept" if e is kept else "")
        )
    lines = [line.rstrip() for line in lines]
    if len(rows) < len(history):
        lines.append(f"({len(rows)} of {len(history)} evaluations shown; all in curve.md)")
    if history[-1].n < MIN_ITEMS:
        lines.append(
            f"({history[-1].n} validation items: too few for a head or to call a collapse; "
            f"{MIN_ITEMS} needed)"
        )
    if kept is not None:
        lines.append(f"kept step {kept.step}: alpha argmax / head, commonest share argmax / head")
        for name in kept.alpha:
            lines.append(
                f"  {name[:28]:<28} {fmt(kept.alpha[name]):>9} / "
                f"{fmt(kept.head_alpha.get(name)):<9}  {share(kept.share.get(name))} / "
                f"{share(kept.head_share.get(name))}"
            )
    return lines


def collapsed(result: Evaluation) -> str:
    """'quality (argmax), tone (argmax, head)': the dimensions where one value was given to
    every validation item, by which labels."""
    return collapsed_text(result.collapsed)


def collapsed_text(found: dict[str, list[str]]) -> str:
    return ", ".join(f"{name} ({', '.join(how)})" for name, how in found.items())


def collapse_error(kept: Evaluation | None, run_dir: Path) -> AnnotatorError | None:
    """The error `train` ends with when the kept checkpoint collapsed (None: it did not)."""
    if kept is None or not kept.collapsed:
        return None
    return AnnotatorError(
        f"training collapsed: the kept checkpoint (step {kept.step}) gives one value to every "
        f"validation item on {collapsed(kept)} where the human labels have two or more; "
        f"not a usable model (files kept in {run_dir}; see curve.md)"
    )


def _rows(history: list[Evaluation], kept: Evaluation | None) -> list[Evaluation]:
    if len(history) <= MAX_ROWS:
        return history
    chosen = {0, len(history) - 1}
    chosen |= {i for i, e in enumerate(history) if e is kept}
    spare = MAX_ROWS - len(chosen)
    chosen |= {round(k * (len(history) - 1) / (spare + 1)) for k in range(1, spare + 1)}
    return [history[i] for i in sorted(chosen)]


def _top(shares: dict) -> float | None:
    defined = [s for s in shares.values() if s is not None and not math.isnan(s)]
    return max(defined) if defined else None


def _pairs(values: dict, show) -> str:
    return ", ".join(f"{name} {show(v)}" for name, v in values.items())


def fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def share(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
