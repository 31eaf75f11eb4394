"""Terminal output for the CLI: progress and tables (rich, on stderr for progress)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from annotator.agreement import verdict


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


def print_agreement(report: dict) -> None:
    """Names (rubric, dimensions, reviewers) go in as rich `Text`: printed as they are, never
    read as markup (a reviewer `[bob]`) or emoji codes."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"Krippendorff's alpha, run {report['run']} ({report['rubric']})"))
    for col in ("dimension", "level", "coders", "n", "alpha", "95% CI", "verdict"):
        table.add_column(col)
    colour = {"reliable": "green", "tentative": "yellow", "unreliable": "red", "undefined": "dim"}
    for dim in report["dimensions"]:
        for c in dim["comparisons"]:
            a, (low, high) = c["alpha"], c["ci95"]
            word = verdict(a)
            table.add_row(
                Text(dim["dimension"]),
                Text(dim["level"]),
                Text(" vs ".join(c["coders"])),
                str(c["n"]),
                "-" if a is None else f"{a:.3f}",
                Text("-" if low is None else f"[{low:.3f}, {high:.3f}]"),
                Text.assemble((word, colour[word]), f" ({c['note']})" if c["note"] else ""),
            )
    console = Console()
    if not report["reviewers"]:
        console.print("no reviews yet: import some with `annotator review import`")
        return
    console.print(table)
