"""Multi-label dimensions (`kind = "multi"`): any subset of the values, decided value by value.

People see a multi-label dimension as one question whose answer is a set of values (a review
stores it as a list; `results` writes the values joined by ";" and a 0/1 column per value). The
model sees it as one yes/no dimension per value, `<name>.<value>`: `expand` gives that view of a
rubric, and the engine, the readout, calibration heads (one per value) and training all work on
it unchanged. The per-value dimensions follow each other right after the item, so they share
the item's evaluation in the KV cache; each costs its short cue and a one-token answer. The
prompt prefix shows the question once, with the values to answer yes or no for.

`collapse` turns the per-value decisions back into the set, keeping the rubric's `min` and
`max`: too few yes answers add the values with the highest probability of yes, too many keep
the most probable ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from annotator.rubric import Dimension, Rubric, Value

NO, YES = "no", "yes"
BINARY = (NO, YES)  # "no" first: an exact tie reads as no


def value_dimension(dim: Dimension, value: Value) -> Dimension:
    """The yes/no dimension for one value of multi-label `dim`."""
    return Dimension(f"{dim.name}.{value}", dim.question, "nominal", BINARY, origin=dim)


def expand(rubric: Rubric) -> Rubric:
    """The rubric as the model sees it: each multi-label dimension as one yes/no dimension per
    value, in place. A rubric without multi-label dimensions is returned as it is. Its JSON
    and hash are the original's (what provenance and model files record)."""
    if not any(d.multi for d in rubric.dimensions):
        return rubric
    dims: list[Dimension] = []
    for dim in rubric.dimensions:
        dims += [value_dimension(dim, v) for v in dim.values] if dim.multi else [dim]
    return replace(rubric, dimensions=tuple(dims))


def value_of(sub: Dimension) -> str:
    """The value a per-value dimension asks about."""
    return sub.name[len(sub.parent) + 1 :]


def prefix_line(rubric: Rubric, sub: Dimension) -> str:
    """The prompt prefix's line for a multi-label dimension, written at its first value's
    dimension (the others write nothing)."""
    siblings = [d for d in rubric.dimensions if d.parent == sub.parent]
    if siblings[0] is not sub:
        return ""
    shown = ", ".join(value_of(d) for d in siblings)
    return "".join(
        [sub.parent, ": ", sub.question.strip(), "\nAnswer yes or no for each of: ", shown, "\n"]
    )


def choose(dim: Dimension, yes: Sequence[bool], p_yes: Sequence[float]) -> tuple[str, ...]:
    """The set for `dim` from each value's yes/no decision, within its min and max."""
    by_p = sorted(range(len(dim.values)), key=lambda i: (-p_yes[i], i))
    picked = {i for i, y in enumerate(yes) if y}
    for i in by_p:
        if len(picked) >= dim.min_count:
            break
        picked.add(i)
    top = len(dim.values) if dim.max_count is None else dim.max_count
    if len(picked) > top:
        picked = set([i for i in by_p if i in picked][:top])
    return tuple(str(v) for i, v in enumerate(dim.values) if i in picked)


def collapse(
    rubric: Rubric, labels: Mapping[str, Any], probs: Mapping[str, Sequence[float]] | None
) -> dict[str, tuple[Value, float, float]]:
    """Per-value labels ((value, prob, margin) per expanded dimension) as the rubric's: a
    multi-label dimension gets (set, probability of that set with the values decided
    independently, the smallest margin). Other dimensions pass through."""
    out: dict[str, tuple[Value, float, float]] = {}
    for dim in rubric.dimensions:
        if not dim.multi:
            out[dim.name] = _triple(labels[dim.name])
            continue
        subs = [_triple(labels[f"{dim.name}.{v}"]) for v in dim.values]
        p_yes = yes_probs(dim, labels, probs)
        chosen = choose(dim, [s[0] == YES for s in subs], p_yes)
        joint = 1.0
        for v, p in zip(dim.values, p_yes, strict=True):
            joint *= p if v in chosen else 1.0 - p
        out[dim.name] = (chosen, joint, min(float(s[2]) for s in subs))
    return out


def yes_probs(
    dim: Dimension, labels: Mapping[str, Any], probs: Mapping[str, Sequence[float]] | None
) -> list[float]:
    """Each value's probability of yes: the stored distribution, else the decision's own."""
    out = []
    for v in dim.values:
        name = f"{dim.name}.{v}"
        dist = (probs or {}).get(name)
        if dist:
            out.append(float(dist[1]))
        else:
            value, prob, _ = _triple(labels[name])
            out.append(prob if value == YES else 1.0 - prob)
    return out


def _triple(label: Any) -> tuple[Value, float, float]:
    """(value, prob, margin) of a stored Label or of such a tuple."""
    if hasattr(label, "margin"):
        return label.value, float(label.prob), float(label.margin)
    value, prob, margin = label
    return value, float(prob), float(margin)


def as_answers(rubric: Rubric, values: Mapping[str, Value]) -> dict[str, Value]:
    """People's values (a set per multi-label dimension) as the expanded rubric's: yes or no
    per value. Dimensions without a value stay absent."""
    out: dict[str, Value] = {}
    for dim in rubric.dimensions:
        if dim.name not in values:
            continue
        if dim.multi and values[dim.name] is not None:
            chosen = set(dim.parse_value(values[dim.name]))
            out.update({f"{dim.name}.{v}": YES if v in chosen else NO for v in dim.values})
        else:
            out[dim.name] = values[dim.name]
    return out


def review_rows(rubric: Rubric, rows: Sequence[tuple]) -> list[tuple]:
    """Review rows as the store gives them (item, dimension, reviewer, value, ...rest) with
    each multi-label set spread into per-value yes/no rows: what the model's view (heads,
    training) compares with."""
    multi = {d.name: d for d in rubric.dimensions if d.multi}
    out: list[tuple] = []
    for item, dim_name, reviewer, value, *rest in rows:
        dim = multi.get(dim_name)
        if dim is None:
            out.append((item, dim_name, reviewer, value, *rest))
            continue
        chosen = set(dim.parse_value(value))
        for v in dim.values:
            out.append((item, f"{dim_name}.{v}", reviewer, YES if v in chosen else NO, *rest))
    return out


def cell(value: Value) -> str:
    """A set as one `results` cell: its values joined by ";" (empty for none)."""
    return ";".join(str(v) for v in value) if isinstance(value, tuple | list) else str(value)


def shown(value: Value) -> str:
    """A value as the app shows it: a set's values joined by ";" ("none" for the empty set)."""
    return (cell(value) or "none") if isinstance(value, tuple | list) else str(value)


def multi_labels(
    rubric: Rubric | None, labels: Mapping[str, Any], probs: Any = None
) -> dict[str, Any]:
    """Stored labels (annotator/project/store.py Labels, per value for a multi-label dimension)
    as the rubric's Labels: a multi-label dimension's value is its set. Unchanged without one."""
    from annotator.project.store import Label

    if rubric is None or not any(d.multi for d in rubric.dimensions):
        return dict(labels)
    return {k: Label(*v) for k, v in collapse(rubric, labels, probs).items()}
