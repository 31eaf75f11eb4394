"""Reviewers' labels: importing spot checks, and agreement between model and reviewers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from annotator.agreement import agreement
from annotator.data import read_rows
from annotator.errors import AnnotatorError
from annotator.rubric import Value
from annotator.store import Store

# Queues whose reviews count towards alpha: the random audit sample and imported labels.
# The "hard" queue holds items picked for low model confidence and would bias alpha.
UNBIASED_QUEUES = ("audit", "import")
MODEL = "model"


@dataclass
class ImportReport:
    stored: int = 0
    items: int = 0
    problems: list[str] = field(default_factory=list)


def import_reviews(store: Store, path: str | Path, reviewer: str) -> ImportReport:
    rubric = store.rubric()
    if rubric is None:
        raise AnnotatorError(f"{store.path}: project has no rubric yet (annotate first)")
    if not reviewer.strip() or reviewer == MODEL:
        raise AnnotatorError(f"--reviewer: {reviewer!r} is not a usable reviewer name")
    rows = read_rows(path)
    dims = [d for d in rubric.dimensions]
    if rows.columns is not None:
        if "id" not in rows.columns:
            raise AnnotatorError(f"{rows.path}: no 'id' column in the header")
        if not any(d.name in rows.columns for d in dims):
            names = ", ".join(d.name for d in dims)
            raise AnnotatorError(f"{rows.path}: no dimension column ({names}) in the header")
    known = store.item_ids()
    report = ImportReport()
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


def agreement_report(store: Store, run_id: int | None = None, reviewer: str | None = None,
                     bootstrap: int = 1000, seed: int = 0) -> dict:
    """Per dimension: alpha(model, reviewer) for each reviewer, and between reviewers."""
    rubric = store.rubric()
    if rubric is None:
        raise AnnotatorError(f"{store.path}: project has no rubric yet (annotate first)")
    run = store.run(run_id)
    model_labels = {item_id: labels for item_id, labels, _ in store.annotations(run.id)}
    reviews = [r for r in store.reviews() if r[4] in UNBIASED_QUEUES]
    reviewers = sorted({r[2] for r in reviews})
    if reviewer is not None:
        if reviewer not in reviewers:
            raise AnnotatorError(f"{store.path}: no reviews by {reviewer!r} (reviewers: {', '.join(reviewers) or 'none'})")
        reviewers = [reviewer]
    by_coder: dict[str, dict[tuple[str, str], Value]] = {name: {} for name in reviewers}
    for item_id, dim_name, name, value, _ in reviews:
        if name in by_coder:
            by_coder[name][(item_id, dim_name)] = value

    dimensions = []
    for dim in rubric.dimensions:
        model_values = {i: labels[dim.name].value for i, labels in model_labels.items()}
        comparisons = []
        groups = [[MODEL, name] for name in reviewers]
        if len(reviewers) > 1:
            groups += [list(reviewers), [MODEL, *reviewers]]
        for coders in groups:
            items = sorted({i for name in coders if name != MODEL
                            for (i, d) in by_coder[name] if d == dim.name})
            table = [[model_values.get(i) if name == MODEL else by_coder[name].get((i, dim.name))
                      for i in items] for name in coders]
            comparisons.append(agreement(dim, coders, table, bootstrap, seed).as_dict())
        dimensions.append({"dimension": dim.name, "level": dim.scale, "comparisons": comparisons})
    return {
        "project": str(store.path), "run": run.id, "model": run.model_path,
        "model_sha256": run.model_sha256, "rubric": rubric.name, "rubric_hash": rubric.hash,
        "reviewers": reviewers, "queues": list(UNBIASED_QUEUES), "bootstrap": bootstrap,
        "dimensions": dimensions,
    }
