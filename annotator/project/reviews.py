"""Reviewers' labels: importing spot checks, and agreement between model and reviewers."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from annotator.agreement import agreement, level_name
from annotator.ceiling import ceiling
from annotator.data import data_format, read_rows, write_rows
from annotator.errors import AnnotatorError, printable
from annotator.multilabel import cell, multi_labels
from annotator.project.store import Store
from annotator.rubric import Value

# Queues whose reviews count towards alpha: the random audit sample and imported labels.
# The "hard" queue holds items picked for low model confidence and would bias alpha (and its
# reviewer may have seen the model's answer); the "teach" queue (annotator/calibration/
# teach.py) items picked to improve the head, so neither counts. The order is the order of
# preference, see `unbiased_labels`. Heads are fitted on FIT_QUEUES: teach reviews too.
UNBIASED_QUEUES = ("audit", "import")
FIT_QUEUES = ("audit", "import", "teach")
QUEUES = ("audit", "hard", "import", "teach")
MODEL = "model"


def unbiased_labels(
    reviews: Iterable[tuple[str, str, str, Value, str]],
    queues: tuple[str, ...] = UNBIASED_QUEUES,
) -> dict[str, dict[tuple[str, str], Value]]:
    """reviewer -> (item id, dimension) -> the one label of theirs that alpha counts.

    The store keeps a review per queue, so one reviewer may hold several reviews of the same
    item and dimension. Only `UNBIASED_QUEUES` count, and one of them per reviewer, item and
    dimension, so nothing is counted twice: the audit review if there is one, else the
    imported one. Hard-queue reviews never count, even where they are the only review.
    (`queues=FIT_QUEUES`: the labels a head is fitted on, teach reviews last.)
    """
    reviews = list(reviews)
    found: dict[str, dict[tuple[str, str], Value]] = {}
    for preferred in queues:  # audit first, then import (then teach)
        for item_id, dim_name, name, value, queue in reviews:
            if queue == preferred:
                found.setdefault(name, {}).setdefault((item_id, dim_name), value)
    return found


def queue_items(
    reviews: Iterable[tuple[str, str, str, Value, str]], reviewer: str | None = None
) -> dict[str, int]:
    """Per queue, how many items alpha counts or leaves out (the dashboard says so): "audit",
    items with an audit review; "import", with an imported label and no audit review by the
    same reviewer; "hard" and "teach", with such a review and no counted review by the same
    reviewer (those count nowhere). `reviewer`: only theirs."""
    mine = [r for r in reviews if reviewer is None or r[2] == reviewer]
    audit = {(r[0], r[2]) for r in mine if r[4] == "audit"}
    counted = {(r[0], r[2]) for r in mine if r[4] in UNBIASED_QUEUES}
    found = {"audit": len({item_id for item_id, _ in audit})}
    found["import"] = len({r[0] for r in mine if r[4] == "import" and (r[0], r[2]) not in audit})
    for queue in ("hard", "teach"):
        found[queue] = len({r[0] for r in mine if r[4] == queue and (r[0], r[2]) not in counted})
    return found


def check_reviewer(name: str) -> str | None:
    """What is wrong with `name` as a reviewer's name, or None. One rule for the app's name
    prompt and `review import --reviewer`; both apply it to the name without outer spaces."""
    if not name:
        return "a name is needed: it is saved with every review"
    if name == MODEL:
        return f"{MODEL!r} is reserved for the model"
    if len(name) > 100 or not name.isprintable():
        return "use a short, printable name"
    return None


@dataclass
class ImportReport:
    stored: int = 0
    items: int = 0
    problems: list[str] = field(default_factory=list)
    reviewer: str = ""  # the name stored (without outer spaces)


def import_reviews(store: Store, path: str | Path, reviewer: str) -> ImportReport:
    rubric = store.rubric()
    if rubric is None:
        raise AnnotatorError(f"{store.path}: project has no rubric yet (annotate first)")
    reviewer = reviewer.strip()
    if (problem := check_reviewer(reviewer)) is not None:
        raise AnnotatorError(f"--reviewer: {problem}")
    rows = read_rows(path)
    dims = [d for d in rubric.dimensions]
    if rows.columns is not None:
        if "id" not in rows.columns:
            raise AnnotatorError(f"{rows.path}: no 'id' column in the header")
        if not any(d.name in rows.columns for d in dims):
            names = ", ".join(d.name for d in dims)
            raise AnnotatorError(f"{rows.path}: no dimension column ({names}) in the header")
    _refuse_repeated_ids(rows.path, rows.records)
    known = store.item_ids()
    report = ImportReport(reviewer=reviewer)
    to_save: list[tuple[str, str, Value]] = []
    for number, record in rows.records:
        where = f"{rows.path} row {number}"
        if isinstance(record, str):
            report.problems.append(f"{where}: {record}")
            continue
        item_id = str(record.get("id", "")).strip()
        if item_id not in known:
            report.problems.append(f"{where}: unknown id {item_id!r}")
            continue
        found = False
        for dim in dims:
            raw = record.get(dim.name)
            if raw is None or str(raw).strip() == "":
                continue  # blank: not reviewed
            try:
                to_save.append((item_id, dim.name, dim.parse_value(raw)))
                found = True
            except ValueError as exc:
                report.problems.append(f"{where}: {dim.name}: {exc}")
        report.items += found
    report.stored = store.save_reviews(reviewer, "import", to_save) if to_save else 0
    return report


def _refuse_repeated_ids(path: Path, records: list[tuple[int, dict[str, object] | str]]) -> None:
    """Two rows for one id: which is the reviewer's answer? Refused, naming the rows."""
    rows_of: dict[str, list[int]] = {}
    for number, record in records:
        if isinstance(record, dict) and (item_id := str(record.get("id", "")).strip()):
            rows_of.setdefault(item_id, []).append(number)
    repeated = [(item_id, numbers) for item_id, numbers in rows_of.items() if len(numbers) > 1]
    if repeated:
        shown = ", ".join(
            f"{printable(item_id, 60)!r} on rows {_listed(numbers)}"
            for item_id, numbers in repeated[:5]
        )
        more = f" (and {len(repeated) - 5} more ids)" if len(repeated) > 5 else ""
        raise AnnotatorError(
            f"{path}: the same id on more than one row: {shown}{more}; nothing imported"
        )


def _listed(numbers: list[int]) -> str:
    """1 and 3; 1, 3 and 5; 1, 3, 5 and 4 more."""
    if len(numbers) > 4:
        return f"{', '.join(map(str, numbers[:3]))} and {len(numbers) - 3} more"
    return f"{', '.join(map(str, numbers[:-1]))} and {numbers[-1]}"


@dataclass
class ExportReport:
    path: Path
    items: int = 0  # rows written
    labels: int = 0  # non-blank dimension cells written
    conflicts: int = 0  # item+dimension cells where reviewers disagree, left blank
    incomplete: int = 0  # rows with at least one blank dimension (`train` skips those rows)


def export_reviews(
    store: Store,
    out: str | Path,
    reviewer: str | None = None,
    queue: str = "all",
    force: bool = False,
    raw_cells: bool = False,
) -> ExportReport:
    """Reviewed items as a labelled file `annotator train --data` reads (.csv, .tsv, .jsonl).

    One row per item with at least one label: `id`, the rubric's input columns (the stored
    item text) and one column per dimension (blank where not reviewed). Where several
    reviewers labelled the same item and dimension (no `reviewer` given), agreeing values are
    written and disagreeing ones left blank and counted as conflicts. The file is written to a
    temporary file beside `out` and renamed into place; an existing `out` needs `force`.
    CSV/TSV cells that a spreadsheet would run as a formula get a leading quote unless
    `raw_cells` (see `data.safe_cell`); JSONL is written exactly.
    """
    out = Path(out)
    data_format(out)  # an unknown suffix fails before any work
    if queue != "all" and queue not in QUEUES:
        raise AnnotatorError(f"--queue: {queue!r} is not one of {', '.join(QUEUES)}, all")
    if out.exists() and not force:
        raise AnnotatorError(f"{out}: already exists (use --force to replace it)")
    rubric = store.rubric()
    if rubric is None:
        raise AnnotatorError(f"{store.path}: project has no rubric yet (annotate first)")
    inputs = [f.column for f in rubric.inputs]
    dims = [d.name for d in rubric.dimensions]
    columns = ["id", *inputs, *dims]
    if len(set(columns)) != len(columns):
        raise AnnotatorError(
            f"{store.path}: the rubric's input and dimension names clash with "
            f"each other or with 'id'; cannot write one column per name"
        )

    reviews = store.timed_reviews(None if queue == "all" else queue)
    if not reviews:
        where = "" if queue == "all" else f" in the {queue!r} queue"
        raise AnnotatorError(f"{store.path}: no reviews{where} to export")
    if reviewer is not None:
        reviews = [r for r in reviews if r[2] == reviewer]
        if not reviews:
            where = "" if queue == "all" else f" in the {queue!r} queue"
            names = ", ".join(store.reviewers()) or "none"
            raise AnnotatorError(
                f"{store.path}: no reviews by {reviewer!r}{where} (reviewers: {names})"
            )

    # One value per reviewer, item and dimension first; then across reviewers: agreeing
    # values are written, disagreeing ones are conflicts.
    values: dict[tuple[str, str], set[str]] = {}
    parsed: dict[tuple[str, str], Value] = {}
    for (item_id, dim_name, _), value in reviewer_values(reviews, dims).items():
        key = (item_id, dim_name)
        values.setdefault(key, set()).add(json.dumps(value))
        parsed[key] = value
    report = ExportReport(out)
    labels: dict[str, dict[str, Value]] = {}
    for key, seen in values.items():
        if len(seen) > 1:
            report.conflicts += 1
        else:
            labels.setdefault(key[0], {})[key[1]] = parsed[key]

    rows: list[dict[str, object]] = []
    for item in store.items():
        found = labels.get(item.id)
        if not found:
            continue
        row: dict[str, object] = {"id": item.id}
        row.update({c: item.fields.get(c, "") for c in inputs})
        row.update({d: found.get(d) for d in dims})
        rows.append(row)
        report.items += 1
        report.labels += len(found)
        report.incomplete += len(found) < len(dims)
    # It holds item text. A multi-label value is written as its values joined by ";".
    write_rows(out, columns, rows, private=True, raw_cells=raw_cells, csv_cell=_cell)
    return report


def _cell(value: object) -> object:
    return "" if value is None else cell(tuple(value)) if isinstance(value, list) else value


def reviewer_values(
    reviews: Iterable[tuple[str, str, str, Value, str, float]], dims: list[str]
) -> dict[tuple[str, str, str], Value]:
    """(item id, dimension, reviewer) -> that reviewer's answer, from `Store.timed_reviews`.

    The store keeps a review per queue, so a reviewer may have labelled an item twice (in the
    hard queue and later, blind, in the audit sample; or in the app and in an import): the
    later-saved review is their answer, and on equal times the audit one, then import, then
    teach, then hard. Reviews of dimensions not in `dims` are left out. (`reviews export` and
    `train --from-project` both read reviewers' labels through this.)
    """
    preference = {name: n for n, name in enumerate(("audit", "import", "teach", "hard"))}
    latest: dict[tuple[str, str, str], tuple[tuple[float, int], Value]] = {}
    for item_id, dim_name, name, value, queue_name, saved_at in reviews:
        if dim_name not in dims:
            continue  # not a dimension of this rubric
        rank = (saved_at, -preference.get(queue_name, len(preference)))
        mine = latest.get((item_id, dim_name, name))
        if mine is None or rank > mine[0]:
            latest[(item_id, dim_name, name)] = (rank, value)
    return {key: value for key, (_, value) in latest.items()}


def agreement_report(
    store: Store,
    run_id: int | None = None,
    reviewer: str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Per dimension: alpha(model, reviewer) for each reviewer, and between reviewers, and the
    summary against the reviewers' own agreement (`annotator.ceiling`)."""
    rubric = store.rubric()
    if rubric is None:
        raise AnnotatorError(f"{store.path}: project has no rubric yet (annotate first)")
    run = store.run(run_id)
    model_labels = {item_id: labels for item_id, labels, _ in store.annotations(run.id)}
    if any(d.multi for d in rubric.dimensions):  # the sets the per-value decisions give
        model_labels = {
            o.item_id: multi_labels(rubric, o.labels, o.probs) for o in store.outputs(run.id)
        }
    # One label per reviewer, item and dimension: audit, else import; never hard or teach.
    reviews = store.reviews()
    labels = unbiased_labels(reviews)
    reviewers = sorted(labels)
    if reviewer is not None:
        if reviewer not in reviewers:
            raise AnnotatorError(
                f"{store.path}: no reviews by {reviewer!r} (reviewers: {', '.join(reviewers) or 'none'})"
            )
        reviewers = [reviewer]
    by_coder = {name: labels[name] for name in reviewers}

    dimensions = []
    for dim in rubric.dimensions:
        model_values = {i: labels[dim.name].value for i, labels in model_labels.items()}
        comparisons = []
        groups = [[MODEL, name] for name in reviewers]
        if len(reviewers) > 1:
            groups += [list(reviewers), [MODEL, *reviewers]]
        for coders in groups:
            items = sorted(
                {
                    i
                    for name in coders
                    if name != MODEL
                    for (i, d) in by_coder[name]
                    if d == dim.name
                }
            )
            table = [
                [
                    model_values.get(i) if name == MODEL else by_coder[name].get((i, dim.name))
                    for i in items
                ]
                for name in coders
            ]
            comparisons.append(agreement(dim, coders, table, bootstrap, seed).as_dict())
        reviewed = sorted({i for name in reviewers for (i, d) in by_coder[name] if d == dim.name})
        summary = ceiling(
            dim,
            [model_values.get(i) for i in reviewed],
            [[by_coder[name].get((i, dim.name)) for i in reviewed] for name in reviewers],
            bootstrap,
            seed,
        )
        dimensions.append(
            {
                "dimension": dim.name,
                "level": level_name(dim),
                "ceiling": summary.as_dict(),
                "comparisons": comparisons,
            }
        )
    return {
        "project": str(store.path),
        "run": run.id,
        "model": run.model_path,
        "model_sha256": run.model_sha256,
        "rubric": rubric.name,
        "rubric_hash": rubric.hash,
        "reviewers": reviewers,
        "queues": list(UNBIASED_QUEUES),
        "items_by_queue": queue_items(reviews, reviewer),
        "bootstrap": bootstrap,
        "dimensions": dimensions,
    }
