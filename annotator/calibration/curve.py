"""How many reviews are enough: a learning curve per dimension for the calibration head.

For each size (25, 50, 100, 200 reviewed items, capped at what exists), a head is fitted
(`heads.fit_dimension`, exactly as `calibrate` fits it) on a random subset of that many
reviewed items and labels the reviewed items of groups it never saw; its alpha against each
reviewer on those items, averaged over the reviewers (the dashboard's "model" figure), is one
draw. The curve is the mean over the draws, with the 95% interval of that mean (± 1.96
standard errors): how well the curve itself is known. A single draw varies far more (the
held-out items are few at the largest size), so comparing the next point's gain with the
spread of single draws would call every curve flat. The reviews already in the project are
the data; nothing is written.

Items that share an input text (a dialogue's context, a summary's article) are one group:
a held-out item never shares a text with one the head was fitted on, or alpha would read the
model's memory of the text, not the dimension. A column whose most common value covers more
than half of the items (a constant instruction, a yes/no field) does not group.

The point where reviewing more stops paying: the first size from which every later point moves
alpha, per 50 reviews, by less than the half-interval of the point before it. "From which
every later" and not "the first pair that": at small sizes the gain is noisy, and a flat
stretch early on says nothing about the rise after it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from annotator.agreement import alpha, domain, encode
from annotator.calibration.features import features, stored_states
from annotator.calibration.heads import MIN_ITEMS, fit_dimension
from annotator.errors import AnnotatorError
from annotator.multilabel import expand, review_rows
from annotator.project.reviews import unbiased_labels
from annotator.project.store import Store
from annotator.rubric import Dimension

SIZES = (25, 50, 100, 200)
REPEATS = 20
MIN_HELD_OUT = 20  # items a draw is measured on, at least: the largest size gives way
STEP = 50  # "another 50 reviews"
CROWDED = 0.5  # a column whose commonest value covers more of the items does not group


@dataclass(frozen=True)
class Point:
    size: int  # reviewed items each head was fitted on
    alpha: float | None  # mean over the draws with a defined alpha
    low: float | None  # mean - 1.96 standard errors of the mean over the draws
    high: float | None
    draws: int  # draws with a defined alpha


@dataclass(frozen=True)
class Curve:
    dimension: str
    items: int  # reviewed items with the run's hidden states
    points: tuple[Point, ...]
    note: str = ""  # why there is no curve

    @property
    def enough(self) -> int | None:
        """The first size from which every later point moves alpha, per STEP reviews, by
        less than the half-width of the interval of the point before it; None when the curve
        still rises (or is undefined) at its end."""
        found = None
        for a, b in zip(self.points, self.points[1:], strict=False):
            if None in (a.alpha, b.alpha, a.low, a.high):
                return None
            move = abs(b.alpha - a.alpha) * STEP / (b.size - a.size)  # type: ignore[operator]
            if move < (a.high - a.low) / 2:  # type: ignore[operator]
                found = a.size if found is None else found
            else:
                found = None
        return found


def groups(fields: dict[str, dict[str, str]], columns: list[str]) -> dict[str, int]:
    """item id -> group: items sharing a value of any grouping column are one group
    (union-find over those values); crowded columns are left out (see CROWDED)."""
    ids = sorted(fields)
    parent = {i: i for i in ids}

    def root(i: str) -> str:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for column in columns:
        values = {i: fields[i].get(column, "") for i in ids}
        counts = Counter(values.values())
        if not counts or counts.most_common(1)[0][1] > CROWDED * len(ids):
            continue
        first: dict[str, str] = {}
        for i in ids:
            if counts[values[i]] > 1:
                other = first.setdefault(values[i], i)
                parent[root(i)] = root(other)
    roots = sorted({root(i) for i in ids})
    number = {r: k for k, r in enumerate(roots)}
    return {i: number[root(i)] for i in ids}


def _draw(
    rng: np.random.Generator, group_of: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held out) item indices: whole groups in random order until `size` items, the
    last one cut to fit; the rest of a cut group is in neither."""
    order = rng.permutation(np.unique(group_of))
    fit: list[int] = []
    held: list[int] = []
    for g in order:
        members = np.flatnonzero(group_of == g)
        if len(fit) < size:
            fit.extend(rng.permutation(members)[: size - len(fit)].tolist())
        else:
            held.extend(members.tolist())
    return np.array(fit), np.array(held)


def dimension_curve(
    dim: Dimension,
    states: np.ndarray,
    reviews: list[list[int | None]],
    group_of: np.ndarray,
    sizes: tuple[int, ...] = SIZES,
    repeats: int = REPEATS,
    seed: int = 0,
) -> Curve:
    """states: (n, dimensions, n_embd) per reviewed item; reviews: one row per reviewer of
    value indices (None: not labelled by that reviewer); group_of: each item's group."""
    n = len(states)
    if dim.scale == "nominal":
        return Curve(dim.name, n, (), "nominal: no head")
    largest = n - MIN_HELD_OUT
    usable = sorted({min(s, largest) for s in sizes if min(s, largest) >= MIN_ITEMS})
    if not usable or len(np.unique(group_of)) < 2:
        return Curve(
            dim.name,
            n,
            (),
            f"{n} reviewed items in {len(np.unique(group_of))} groups; a curve needs "
            f"{MIN_ITEMS + MIN_HELD_OUT} in two groups or more",
        )
    table = np.array(
        [[np.nan if v is None else float(v) for v in row] for row in reviews], dtype=float
    )
    targets = np.nanmean(table, axis=0)
    feats = np.stack([features(h) for h in states])
    values = [encode(dim, v) for v in dim.values]
    coded = np.where(np.isnan(table), np.nan, np.take(values, np.nan_to_num(table).astype(int)))
    dom = domain(dim)
    rng = np.random.default_rng(seed)
    points = []
    for size in usable:
        draws = []
        for _ in range(repeats):
            fit, held = _draw(rng, group_of, size)
            if len(held) < 2:
                continue
            given = table[:, fit]
            positions = given[~np.isnan(given)].astype(int).tolist()
            if len(set(positions)) < 2:
                continue  # one value among the fitted items: no head (as calibrate)
            head = fit_dimension(dim, states[fit], targets[fit].tolist(), positions).head
            scores = feats[held] @ head.weights.astype(np.float64) + head.bias
            chosen = np.searchsorted(np.asarray(head.thresholds), scores, side="right")
            model = np.take(values, chosen)
            pairs = [alpha(np.stack([model, row[held]]), dim.scale, dom) for row in coded]
            defined = [p for p in pairs if p is not None]
            if defined:
                draws.append(float(np.mean(defined)))
        if draws:
            mean = float(np.mean(draws))
            half = (
                1.96 * float(np.std(draws, ddof=1)) / len(draws) ** 0.5 if len(draws) > 1 else 0.0
            )
            points.append(Point(size, mean, mean - half, mean + half, len(draws)))
        else:
            points.append(Point(size, None, None, None, 0))
    return Curve(dim.name, n, tuple(points))


def learning_curves(
    store: Store,
    run_id: int | None = None,
    reviewer: str | None = None,
    sizes: tuple[int, ...] = SIZES,
    repeats: int = REPEATS,
    seed: int = 0,
) -> tuple[list[Curve], int]:
    """(a curve per dimension, the number of groups) from a run's stored hidden states and
    the project's audit and imported reviews (one reviewer with `reviewer`)."""
    rubric = store.rubric()
    if rubric is None:
        raise AnnotatorError(f"{store.path}: project has no rubric yet (annotate first)")
    people, rubric = rubric, expand(rubric)  # multi-label: a curve per value
    run = store.run(run_id)
    outputs = {o.item_id: o for o in store.outputs(run.id)}
    if any(o.hidden is None for o in outputs.values()):
        raise AnnotatorError(
            f"{store.path}: run {run.id} was labelled before hidden states were stored; "
            "annotate the data again"
        )
    labels = unbiased_labels(review_rows(people, store.reviews()))
    if reviewer is not None:
        if reviewer not in labels:
            raise AnnotatorError(
                f"{store.path}: no audit or imported reviews by {reviewer!r} "
                f"(reviewers: {', '.join(sorted(labels)) or 'none'})"
            )
        labels = {reviewer: labels[reviewer]}
    reviewed = sorted({i for mine in labels.values() for (i, _) in mine if i in outputs})
    fields = {item.id: item.fields for item in store.items() if item.id in set(reviewed)}
    group = groups(fields, [f.column for f in rubric.inputs])
    n_dims = len(rubric.dimensions)
    curves = []
    for dim in rubric.dimensions:
        items = [i for i in reviewed if any((i, dim.name) in mine for mine in labels.values())]
        reviews = [
            [
                None if (i, dim.name) not in mine else dim.values.index(mine[(i, dim.name)])
                for i in items
            ]
            for mine in labels.values()
        ]
        states = np.stack(
            [stored_states(outputs[i].hidden, n_dims) for i in items] or [np.zeros((n_dims, 1))]
        )[: len(items)]
        curves.append(
            dimension_curve(
                dim, states, reviews, np.array([group[i] for i in items]), sizes, repeats, seed
            )
        )
    return curves, len(set(group.values()))


def _cell(point: Point) -> str:
    if point.alpha is None or point.low is None or point.high is None:
        return "-"
    return f"{point.alpha:.2f}±{(point.high - point.low) / 2:.2f}"


def describe(curves: list[Curve], groups: int) -> list[str]:
    """What `calibrate --curve` prints and the app shows: the table between its legend lines,
    every line within 76 columns (an 80-column screen less a dialog's border and padding)."""
    items = max((c.items for c in curves), default=0)
    return [
        "alpha of heads fitted on N reviewed items, vs each reviewer (mean), on",
        f"held-out items, mean of {REPEATS} draws ± its 95% interval ({items} items, {groups} groups)",
        *curve_lines(curves),
        f"enough at: from there on, another {STEP} reviews move alpha by less than its ±",
        "(groups: items that share an input text are fitted or held out together)",
    ]


def curve_lines(curves: list[Curve]) -> list[str]:
    """One line per dimension, within 80 columns for names up to 20 characters; a header
    line wherever the sizes change (a dimension with fewer reviewed items caps them)."""
    name_width = min(20, max([9] + [len(c.dimension) for c in curves]))
    lines: list[str] = []
    header: tuple[int, ...] | None = None
    for curve in curves:
        name = curve.dimension
        name = (name if len(name) <= name_width else name[: name_width - 1] + "…").ljust(name_width)
        if not curve.points:
            lines.append(f"{name}  ({curve.note})")
            continue
        sizes = tuple(p.size for p in curve.points)
        if sizes != header:
            header = sizes
            lines.append(
                "dimension".ljust(name_width)
                + "".join(f"  {str(s) + ' items':<10}" for s in sizes)
                + "  enough at"
            )
        enough = curve.enough
        lines.append(
            name
            + "".join(f"  {_cell(p):<10}" for p in curve.points)
            + "  "
            + ("not yet" if enough is None else str(enough))
        )
    return lines
