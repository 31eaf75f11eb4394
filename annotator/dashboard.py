"""The agreement dashboard as text: one line per dimension, fitted to a terminal's width.

`annotator agree` and the app's Agreement tab print the same rows from an agreement report
(`annotator.project.reviews.agreement_report`). A row is a list of cells, each a text and a
style key ("reliable", "tentative", "unreliable", "undefined" or ""), which the CLI maps to
rich colours and the app to theme variables; nothing here imports either. The columns are
sized to their content and the dimension name gives way (with an ellipsis) before a line
would wrap: a wrapped table of six dimensions no longer fits one screen.
"""

from __future__ import annotations

from dataclasses import dataclass

from annotator.agreement import verdict

Cell = tuple[str, str]  # text, style key

SUMMARY_HEAD = ("dimension", "n", "raters", "model", "share", "95% CI", "verdict")
PAIRS_HEAD = ("coders", "n", "alpha", "95% CI", "verdict")
RIGHT = {"n", "raters", "model", "share", "alpha"}  # numbers align on the right
MIN_NAME = 8  # a dimension or coder name is cut no shorter than this

LEGEND = (
    "raters: the reviewers' alpha among themselves, the ceiling; model: its mean",
    "alpha vs each reviewer. ≥ 0.800 reliable, ≥ 0.667 tentative; ≈ ceiling: below",
    "it, but inside the 95% interval of the gap; < ceiling: below that interval",
)


def counted_lines(report: dict) -> list[str]:
    """Which reviews alpha counts, plainly, in two lines of at most 80 columns: audit-sample
    items only, or imported labels too (not the app's random sample); then the hardest-first
    and teach items it leaves out."""
    by_queue = report.get("items_by_queue") or {}
    audit, imported = by_queue.get("audit", 0), by_queue.get("import", 0)
    counted = (
        f"alpha: {audit} audit-sample item(s) only"
        if not imported
        else f"alpha: {audit} audit-sample and {imported} imported item(s), not the audit "
        "sample only"
    )
    left = f"not counted: {by_queue.get('hard', 0)} hardest-first, {by_queue.get('teach', 0)} teach item(s)"
    return [counted, left]


def _alpha(a: float | None, digits: int) -> str:
    return "-" if a is None else f"{a:.{digits}f}"


def _interval(low: float | None, high: float | None, digits: int) -> str:
    return "-" if low is None or high is None else f"[{low:.{digits}f}, {high:.{digits}f}]"


def summary_row(entry: dict) -> list[Cell]:
    """One dimension of a report: two decimals, the pairwise rows keep three."""
    c = entry["ceiling"]
    share = "-" if c["share"] is None else f"{100 * c['share']:.0f}%"
    model_word = verdict(c["model"])
    return [
        (entry["dimension"], ""),
        (str(c["n"]), ""),
        (_alpha(c["raters"], 2), verdict(c["raters"]) if c["raters"] is not None else ""),
        (_alpha(c["model"], 2), model_word),
        (share, ""),
        (_interval(*c["ci95"], 2), ""),
        (c["verdict"], model_word),
    ]


def pair_rows(entry: dict, reviewers: list[str]) -> list[list[Cell]]:
    """The pairwise comparisons of one dimension; the reviewers' own row is marked as the
    ceiling and judged on the conventions only (it is not compared with itself)."""
    rows = []
    for comp in entry["comparisons"]:
        coders = " vs ".join(comp["coders"])
        if len(reviewers) > 1 and list(comp["coders"]) == list(reviewers):
            coders = f"ceiling: {coders}"
        word = verdict(comp["alpha"])
        rows.append(
            [
                (coders, ""),
                (str(comp["n"]), ""),
                (_alpha(comp["alpha"], 3), word),
                (_interval(*comp["ci95"], 3), ""),
                (word, word),
            ]
        )
    return rows


@dataclass(frozen=True)
class Table:
    head: tuple[str, ...]
    widths: tuple[int, ...]
    gap: int

    def line(self, cells: list[Cell]) -> list[Cell]:
        """`cells` padded (or the first cut) to the columns, with the gaps as plain cells;
        the last column is not padded (no trailing spaces)."""
        out: list[Cell] = []
        last = len(cells) - 1
        for k, ((text, style), width, name) in enumerate(
            zip(cells, self.widths, self.head, strict=True)
        ):
            if len(text) > width:
                text = text[: width - 1] + "…"
            if k < last:
                text = text.rjust(width) if name in RIGHT else text.ljust(width)
            out.append((text, style))
            if k < last:
                out.append((" " * self.gap, ""))
        return out

    def header(self) -> list[Cell]:
        return self.line([(name, "") for name in self.head])


def fit(head: tuple[str, ...], rows: list[list[Cell]], width: int) -> Table:
    """Columns as wide as their content, two spaces apart, within `width`: then one space
    apart, then the first column (the name) cut down to MIN_NAME."""
    widths = [max([len(name)] + [len(row[k][0]) for row in rows]) for k, name in enumerate(head)]
    for gap in (2, 1):
        if sum(widths) + gap * (len(widths) - 1) <= width:
            return Table(head, tuple(widths), gap)
    over = sum(widths) + len(widths) - 1 - width
    widths[0] = max(MIN_NAME, widths[0] - over)
    return Table(head, tuple(widths), 1)


def text(cells: list[Cell]) -> str:
    return "".join(t for t, _ in cells)
