"""`annotator import`: another tool's file (Label Studio, Prodigy, Argilla) as items and
reviews."""

from __future__ import annotations

from pathlib import Path

import click

from annotator.cli import stderr
from annotator.errors import AnnotatorError


@click.command("import")
@click.argument("project", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["labelstudio", "prodigy", "argilla"]),
    required=True,
    help="labelstudio: its JSON export (tasks with annotations); prodigy: JSONL of "
    "answered textcat or choice tasks (as `prodigy db-out` writes).",
)
@click.option(
    "--rubric",
    "rubric_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Rubric TOML [default: the project's]. Creates PROJECT if missing.",
)
@click.option(
    "--dimension", help="prodigy: the dimension each line labels [default: the rubric's only one]."
)
@click.option(
    "--items-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the file's items (id and input columns, .jsonl or .csv) for "
    "`annotator annotate ITEMS --project PROJECT` to label.",
)
def import_file(project, file, fmt, rubric_path, dimension, items_out) -> None:
    """Import FILE's items and their annotations into PROJECT.

    Each annotator becomes a reviewer (imported reviews count towards `agree`).
    Label Studio: the task id is the item id; a choices, rating or taxonomy control (one
    choice, the stars, one path's last name) labels the dimension of its name. Prodigy:
    meta.id (else _input_hash) is the item id; an accepted textcat label or choice option id
    is the dimension's value, a rejected or ignored task gives none. Argilla: the record id is
    the item id; a submitted response to the question named like a dimension is its value.
    Fields not mapped are kept and written back by `results --format`. A file that does not
    fit the rubric is refused whole, naming the record and field; nothing is stored then.
    """
    from annotator.data import data_format, write_rows
    from annotator.formats import store_import
    from annotator.project.store import Store
    from annotator.rubric import load_rubric

    if dimension is not None and fmt != "prodigy":
        raise click.UsageError("--dimension is for --format prodigy")
    if rubric_path is None and not project.exists():
        raise click.UsageError("a new project needs --rubric")
    if rubric_path is not None:
        rubric = load_rubric(rubric_path)
    else:
        with Store(project) as store:
            rubric = store.rubric()
        if rubric is None:
            raise AnnotatorError(f"{project}: project has no rubric yet (give --rubric)")
    # The file is read and checked whole before the project is opened for writing (or
    # created): a refused file leaves nothing behind.
    if fmt == "labelstudio":
        from annotator.formats.labelstudio import read_tasks

        found = read_tasks(file, rubric)
    elif fmt == "argilla":
        from annotator.formats.argilla import read_records

        found = read_records(file, rubric)
    else:
        from annotator.formats.prodigy import read_lines

        found = read_lines(file, rubric, dimension)
    if items_out is not None:
        data_format(items_out)  # an unknown suffix fails before anything is stored
    with Store(project) as store:
        stored = store_import(store, rubric, fmt, found, file)
    if items_out is not None:
        columns = ["id", *(f.column for f in rubric.inputs)]
        rows = ({"id": i.id, **i.fields} for i in found.items)
        # As `annotate` reads them back: JSONL exactly, CSV without formula quotes.
        write_rows(items_out, columns, rows, private=True, raw_cells=True)
    stderr(
        f"imported {stored.items} items and {stored.labels} labels from "
        f"{stored.reviewers} reviewers"
    )
