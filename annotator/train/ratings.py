"""Several ratings of one item: the raters' distribution per dimension, and a project's reviews.

An item rated by several raters (repeated ids in labelled files, one row per rater, or a
project's reviews from several reviewers) becomes one training item. Per dimension its
target is the raters' distribution over the allowed values; a rater who left a dimension
unrated is left out of that dimension's distribution. The value the training sequence
carries (and the one validation compares against) is the majority value, ties going to the
value the rubric lists first. A single rating is a one-hot distribution.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from annotator.errors import AnnotatorError
from annotator.rubric import Rubric, Value


def distribution(rubric: Rubric, ratings: Sequence[Mapping[str, Value]]) -> dict[str, dict]:
    """dimension -> {value: share of the raters who gave it} (values in rubric order, only
    those given); a dimension nobody rated is absent."""
    found: dict[str, dict] = {}
    for dim in rubric.dimensions:
        given = [r[dim.name] for r in ratings if r.get(dim.name) is not None]
        if given:
            found[dim.name] = {v: given.count(v) / len(given) for v in dim.values if v in given}
    return found


def majority(rubric: Rubric, targets: Mapping[str, Mapping[Value, float]]) -> dict[str, Value]:
    """The most shared value per dimension; ties: the value the rubric lists first."""
    found: dict[str, Value] = {}
    for dim in rubric.dimensions:
        shares = targets.get(dim.name)
        if shares:
            found[dim.name] = max(
                dim.values, key=lambda v: (shares.get(v, 0.0), -dim.values.index(v))
            )
    return found


def project_ratings(
    path: Path, rubric: Rubric
) -> tuple[list[tuple[str, dict[str, str], list[dict[str, Value]]]], str]:
    """(item id, input fields, one rating per reviewer) for every reviewed item of the project
    at `path`, and the project file's sha256.

    A reviewer's rating of an item and dimension is the one `annotator reviews export` writes
    (reviews.reviewer_values: the latest saved, audit before import before hard on ties).
    """
    from annotator.project.reviews import reviewer_values
    from annotator.project.store import Store

    if not Path(path).is_file():
        raise AnnotatorError(f"{path}: no such project file")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    with Store(path) as store:
        bound = store.rubric()
        if bound is None:
            raise AnnotatorError(f"{path}: project has no rubric yet (annotate first)")
        if bound.hash != rubric.hash:
            raise AnnotatorError(f"{path}: the project's rubric is not --rubric's")
        dims = [d.name for d in rubric.dimensions]
        values = reviewer_values(store.timed_reviews(), dims)
        if not values:
            raise AnnotatorError(f"{path}: no reviews to train on")
        by_item: dict[str, dict[str, dict[str, Value]]] = {}
        for (item_id, dim_name, reviewer), value in values.items():
            by_item.setdefault(item_id, {}).setdefault(reviewer, {})[dim_name] = value
        inputs = [f.column for f in rubric.inputs]
        found = []
        for item in store.items():
            reviewers = by_item.get(item.id)
            if not reviewers:
                continue
            missing = [c for c in inputs if c not in item.fields]
            if missing:
                raise AnnotatorError(f"{path}: item {item.id!r} has no input {missing[0]!r}")
            fields = {c: item.fields[c] for c in inputs}
            found.append((item.id, fields, [reviewers[name] for name in sorted(reviewers)]))
    return found, digest
