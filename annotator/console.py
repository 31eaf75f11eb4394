"""Terminal output for the CLI: progress and tables (rich, on stderr for progress)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from annotator.agreement import verdict


@contextmanager
def progress_bar(total: int) -> Iterator[Callable[[], None]]:
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
        TextColumn("annotating"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task("annotate", total=total, rate="")

        def advance() -> None:
            progress.advance(task)
            speed = progress.tasks[0].speed
            progress.update(task, rate=f"{speed:.2f} items/s" if speed else "")

        yield advance


def print_agreement(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Krippendorff's alpha, run {report['run']} ({report['rubric']})")
    for col in ("dimension", "level", "coders", "n", "alpha", "95% CI", "verdict"):
        table.add_column(col)
    colour = {"reliable": "green", "tentative": "yellow", "unreliable": "red", "undefined": "dim"}
    for dim in report["dimensions"]:
        for c in dim["comparisons"]:
            a, (low, high) = c["alpha"], c["ci95"]
            word = verdict(a)
            table.add_row(
                dim["dimension"], dim["level"], " vs ".join(c["coders"]), str(c["n"]),
                "-" if a is None else f"{a:.3f}",
                "-" if low is None else f"[{low:.3f}, {high:.3f}]",
                f"[{colour[word]}]{word}[/]" + (f" ({c['note']})" if c["note"] else ""),
            )
    console = Console()
    if not report["reviewers"]:
        console.print("no reviews yet: import some with `annotator review import`")
        return
    console.print(table)
