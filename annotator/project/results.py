"""The results of a run as rows: id, value, probability and margin per dimension."""

from __future__ import annotations

from pathlib import Path

from annotator.data import write_rows
from annotator.errors import AnnotatorError
from annotator.multilabel import cell, collapse, yes_probs
from annotator.project.store import Output
from annotator.rubric import Dimension, Rubric


def columns(rubric: Rubric, with_probs: bool = False) -> list[str]:
    """Unique: the rubric refuses dimension names that would write another's column."""
    cols = ["id"]
    for dim in rubric.dimensions:
        cols += dim.result_columns(with_probs)
    return [*cols, "truncated"]


def result_rows(rubric: Rubric, outputs: list[Output], with_probs: bool = False) -> list[dict]:
    """With `with_probs`, every value's probability too (blank for rows stored before they
    were kept)."""
    rows = []
    for output in outputs:
        row: dict = {"id": output.item_id}
        for dim in rubric.dimensions:
            if dim.multi:
                _multi_cells(row, dim, output, with_probs)
                continue
            label = output.labels[dim.name]
            # Fixed rounding: the same run gives the same bytes.
            row[dim.name] = label.value
            row[f"{dim.name}_p"] = round(label.prob, 6)
            row[f"{dim.name}_margin"] = round(label.margin, 6)
            if with_probs:
                probs = (output.probs or {}).get(dim.name) or [""] * len(dim.values)
                for value, p in zip(dim.values, probs, strict=True):
                    row[f"{dim.name}_p_{value}"] = p if p == "" else round(p, 6)
        row["truncated"] = output.truncated_tokens
        rows.append(row)
    return rows


def _multi_cells(row: dict, dim: Dimension, output: Output, with_probs: bool) -> None:
    """A multi-label dimension's cells: the chosen values (a list; in CSV joined by ";"), 1 or
    0 per value, and (`with_probs`) each value's probability of yes."""
    chosen = collapse(Rubric("", "", (), (dim,)), output.labels, output.probs)[dim.name][0]
    row[dim.name] = list(chosen)  # type: ignore[arg-type]
    p_yes = yes_probs(dim, output.labels, output.probs)
    for value, p in zip(dim.values, p_yes, strict=True):
        row[f"{dim.name}_{value}"] = int(value in chosen)  # type: ignore[operator]
        if with_probs:
            row[f"{dim.name}_p_{value}"] = round(p, 6)


def write_results(
    out: Path, rubric: Rubric, rows: list[dict], with_probs: bool = False, raw_cells: bool = False
) -> None:
    """CSV cells a spreadsheet would run as formulas get a leading quote unless `raw_cells`."""
    if out.suffix.lower() not in (".csv", ".jsonl"):
        raise AnnotatorError(f"{out}: results file must end in .csv or .jsonl")
    write_rows(out, columns(rubric, with_probs), rows, csv_cell=_csv_cell, raw_cells=raw_cells)


def _csv_cell(value: object) -> str:
    if isinstance(value, list):  # a multi-label dimension's values
        return cell(tuple(value))
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def print_table(rubric: Rubric, rows: list[dict]) -> None:
    """Ids, values and the rubric's name go in as rich `Text`: printed as they are, never read
    as markup (`[/x]`) or emoji codes (`:smile:`)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"{rubric.name}: {len(rows)} items"))
    table.add_column(Text("id"))
    for dim in rubric.dimensions:
        table.add_column(Text(dim.name))
        table.add_column("p", style="dim")
    for row in rows:
        cells = [Text(str(row["id"]))]
        for dim in rubric.dimensions:
            if dim.multi:
                cells += [Text(cell(tuple(row[dim.name]))), ""]
                continue
            cells += [Text(str(row[dim.name])), f"{row[f'{dim.name}_p']:.2f}"]
        table.add_row(*cells)
    Console().print(table)
