"""`annotator results --format`: a run's labels written in another tool's import shape.

Kept apart from the package's shared helpers (annotator/formats/__init__.py) because it
dispatches to each format's module, and those import the shared helpers.
"""

from __future__ import annotations

from pathlib import Path

from annotator.errors import AnnotatorError
from annotator.formats import FORMATS, kept_fields
from annotator.project.runs import Run
from annotator.project.store import Store
from annotator.rubric import Rubric


def write_results_as(
    store: Store, rubric: Rubric, run: Run, fmt: str, out: Path, dimension: str | None = None
) -> int:
    """`run`'s labels in `fmt`'s import shape, one task per labelled item; returns how many."""
    wanted = ".jsonl" if fmt == "prodigy" else ".json"
    if out.suffix.lower() != wanted:
        raise AnnotatorError(f"{out}: a {fmt} file must end in {wanted}")
    multi = [d.name for d in rubric.dimensions if d.multi]
    if multi:
        raise AnnotatorError(f"--format {fmt}: multi-label dimension {multi[0]!r} is not supported")
    outputs = store.outputs(run.id)
    items = store.items()
    kept = kept_fields(store, fmt)
    if fmt == "labelstudio":
        from annotator.formats.labelstudio import write_tasks

        return write_tasks(out, rubric, run, items, outputs, kept)
    if fmt == "argilla":
        from annotator.formats.argilla import write_records

        return write_records(out, rubric, run, items, outputs, kept)
    if fmt == "prodigy":
        from annotator.formats.prodigy import dimension_of, write_lines

        return write_lines(out, rubric, dimension_of(rubric, dimension), items, outputs, kept)
    raise AnnotatorError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
