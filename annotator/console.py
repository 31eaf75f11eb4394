"""Terminal output for the CLI: progress and tables (rich, on stderr for progress)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress(
    total: int, what: str, *, rate_unit: str | None = None, terminal_only: bool = False
) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr: `what`, bar, done/total, an info field, elapsed time and ETA.

    The yielded `advance(steps=1, info="")` moves it and sets the info field; with `rate_unit`
    the field shows the rate since the bar started instead ("2.50 items/s"; not rich's recent
    speed, which reads a block of results saved at once, as --ray does, as thousands per
    second). `terminal_only`: draw nothing when stderr is not a terminal (training logs go
    there too).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    console = Console(stderr=True)
    with Progress(
        *columns,
        console=console,
        transient=False,
        disable=terminal_only and not console.is_terminal,
    ) as bar:
        task = bar.add_task(what, total=total, info="")

        def advance(steps: int = 1, info: str = "") -> None:
            bar.update(task, advance=steps, info=info)
            if rate_unit is not None:
                done, elapsed = bar.tasks[0].completed, bar.tasks[0].elapsed
                rate = done / elapsed if done and elapsed else 0.0
                bar.update(task, info=f"{rate:.2f} {rate_unit}/s" if rate else "")

        yield advance


def print_agreement(report: dict, pairs: bool = False) -> None:
    """One line per dimension (annotator.dashboard), fitted to the terminal's width; with
    `pairs`, each pair of coders after it. Names (rubric, dimensions, reviewers) go in as rich
    `Text`: printed as they are, never read as markup (a reviewer `[bob]`) or emoji codes."""
    from rich.console import Console
    from rich.text import Text

    from annotator import dashboard

    console = Console()

    def show(cells: list[dashboard.Cell], style: str = "") -> None:
        line = Text.assemble(*((t, COLOURS.get(key, "")) for t, key in cells), style=style)
        console.print(line, no_wrap=True, overflow="ellipsis", crop=True)

    if not report["reviewers"]:
        console.print("no reviews yet: import some with `annotator review import`")
        return
    width = console.width
    title = f"Krippendorff's alpha, run {report['run']} ({report['rubric']})"
    show([(title, "")], "bold")
    for line in dashboard.counted_lines(report):
        show([(line, "")], "dim")
    rows = [dashboard.summary_row(d) for d in report["dimensions"]]
    table = dashboard.fit(dashboard.SUMMARY_HEAD, rows, width)
    show(table.header(), "bold")
    for row in rows:
        show(table.line(row))
    for line in dashboard.LEGEND:
        show([(line, "")], "dim")
    if not pairs:
        show([("`annotator agree --pairs` shows each pair of coders", "")], "dim")
        return
    pair_rows = {
        d["dimension"]: dashboard.pair_rows(d, report["reviewers"]) for d in report["dimensions"]
    }
    # One set of column widths for every dimension's pairs: they line up down the page.
    pair_table = dashboard.fit(
        dashboard.PAIRS_HEAD, [row for rows in pair_rows.values() for row in rows], width
    )
    for dim in report["dimensions"]:
        console.print()
        show([(f"{dim['dimension']} ({dim['level']})", "")], "bold")
        show(pair_table.header(), "bold")
        for row in pair_rows[dim["dimension"]]:
            show(pair_table.line(row))
        for comp in dim["comparisons"]:
            if comp["note"]:
                show([(f"{' vs '.join(comp['coders'])}: {comp['note']}", "")], "dim")


COLOURS = {"reliable": "green", "tentative": "yellow", "unreliable": "red", "undefined": "dim"}
