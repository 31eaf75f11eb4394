"""`annotator calibrate`: a run's stored model outputs, read out again into a new run.

No model pass: the project keeps every value's probability and the hidden state at each
decision (store migration m003), so a new decision rule, a prior, or a calibration head fitted
on the project's reviewed items is applied to what the model already computed. The result is
a new run (`derived_from` the old one) that `results`, `agree` and the app read like any other.

The dashboard stays honest: an item whose review helped fit the head gets its leave-one-out
label (predicted by a head fitted without it), so `agree` on the new run compares reviewers
only with labels that their own label did not produce. Only audit-sample and imported reviews
are used, as for alpha. The head can be shipped in a file (`--out`, annotator/calibration/
headfile.py): `annotate --model` that file labels new items the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from annotator.calibration.features import stored_states
from annotator.calibration.heads import MIN_ITEMS, DimHead, Fit, Head, fit_dimension
from annotator.calibration.nominal import NominalFit, NominalHead, fit_nominal
from annotator.calibration.readout import Readout, mean_distribution
from annotator.errors import AnnotatorError
from annotator.project.reviews import unbiased_labels
from annotator.project.runs import Run
from annotator.project.store import Label, Output, Store
from annotator.rubric import Rubric


@dataclass
class CalibrationResult:
    parent: int
    run_id: int
    head: Head | None
    readout: dict
    fitted: dict[str, int] = field(default_factory=dict)  # dimension -> reviewed items used
    left_out: dict[str, str] = field(default_factory=dict)  # dimension -> why no head
    reviews_sha256: str | None = None  # of the reviews the head was fitted on


def calibrate(
    store: Store,
    run_id: int | None = None,
    reviewer: str | None = None,
    rule: str | None = None,
    prior: str | None = None,
    fit_head: bool = True,
    *,
    adopt: bool = True,
    require_head: bool = False,
    progress: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Apply `rule`/`prior` (default: the run's) and, with `fit_head`, a head fitted on the
    reviewed items, to run `run_id`'s stored outputs; store the result as a new run.

    `adopt`: the new run becomes the latest (else `Store.adopt_run` can make it so later).
    `require_head`: no dimension with enough reviews is an error, and nothing is stored.
    `progress` hears each step in a few words before it starts; what it raises stops the
    calibration, and before the last step ("storing the new run") nothing is written."""
    tell = progress or (lambda step: None)
    tell("reading the stored outputs")
    rubric = store.rubric()
    if rubric is None:
        raise AnnotatorError(f"{store.path}: project has no rubric yet (annotate first)")
    run = store.run(run_id)
    outputs = store.outputs(run.id)
    if not outputs:
        raise AnnotatorError(f"{store.path}: run {run.id} has no labelled items")
    layer = (run.settings.get("settings") or {}).get("hidden_layer")
    if any(o.probs is None or o.hidden is None for o in outputs) or layer is None:
        raise AnnotatorError(
            f"{store.path}: run {run.id} was labelled before distributions "
            "and middle-layer hidden states were stored; annotate the data again"
        )
    base = run.settings.get("readout") or {}
    readout = Readout(
        rule=rule or base.get("rule", "argmax"),
        prior=prior or base.get("prior", "none"),
        priors={k: tuple(v) for k, v in (base.get("priors") or {}).items()},
    )
    if readout.prior == "batch":  # the mean distribution over this run's items
        readout = replace(
            readout,
            priors={
                d.name: tuple(mean_distribution([o.probs[d.name] for o in outputs]))
                for d in rubric.dimensions
            },
        )
    hidden = {o.item_id: stored_states(o.hidden, len(rubric.dimensions)) for o in outputs}
    probs = {o.item_id: o.probs or {} for o in outputs}
    result = CalibrationResult(run.id, 0, None, {})
    loo: dict[str, dict[str, int]] = {}
    if fit_head:
        loo = _fit_heads(store, rubric, hidden, probs, reviewer, result, int(layer), tell)
    if require_head and result.head is None:
        raise AnnotatorError(
            "no dimension has enough reviewed items for a head ("
            + "; ".join(f"{name}: {why}" for name, why in result.left_out.items())
            + ")"
        )
    relabelled = [
        _relabel(rubric, o, readout, hidden[o.item_id], result.head, loo) for o in outputs
    ]
    described = readout.describe(rubric)
    if readout.prior == "batch":
        described["batch_items"] = len(outputs)
    if result.head is not None:
        described["head"] = result.head.describe()
        described["head_labels"] = "leave-one-out for the items it was fitted on"
        described["head_reviews_sha256"] = result.reviews_sha256  # part of the run's key
    described["derived_from"] = run.id
    result.readout = described
    settings = {**run.settings, "readout": described}
    tell("storing the new run")
    result.run_id = store.start_derived_run(run, settings, relabelled, adopt)
    return result


def _fit_heads(
    store: Store,
    rubric: Rubric,
    hidden: dict[str, np.ndarray],
    probs: dict[str, dict[str, list[float]]],
    reviewer: str | None,
    result: CalibrationResult,
    layer: int,
    tell: Callable[[str], None],
) -> dict[str, dict[str, int]]:
    labels = unbiased_labels(store.reviews())
    if reviewer is not None:
        if reviewer not in labels:
            raise AnnotatorError(
                f"{store.path}: no audit or imported reviews by {reviewer!r} "
                f"(reviewers: {', '.join(sorted(labels)) or 'none'})"
            )
        labels = {reviewer: labels[reviewer]}
    heads: dict[str, DimHead | NominalHead] = {}
    loo: dict[str, dict[str, int]] = {}
    used: set[str] = set()
    considered = sorted(
        (name, item_id, dim, json.dumps(value))
        for name, by_item in labels.items()
        for (item_id, dim), value in by_item.items()
        if item_id in hidden
    )
    result.reviews_sha256 = hashlib.sha256(json.dumps(considered).encode("utf-8")).hexdigest()
    for k, dim in enumerate(rubric.dimensions, 1):
        tell(f"fitting a head on {dim.name} ({k} of {len(rubric.dimensions)})")
        given: dict[str, list[int]] = {}
        for by_item in labels.values():
            for (item_id, name), value in by_item.items():
                if name == dim.name and item_id in hidden:
                    given.setdefault(item_id, []).append(dim.values.index(value))
        items = sorted(given)
        positions = [p for i in items for p in given[i]]
        if len(items) < MIN_ITEMS or len(set(positions)) < 2:
            result.left_out[dim.name] = (
                f"{len(items)} reviewed items"
                + (" with one value" if items and len(set(positions)) < 2 else "")
                + f"; a head needs {MIN_ITEMS} with two values or more"
            )
            continue
        states = np.stack([hidden[i] for i in items])
        if dim.scale == "nominal":
            fit: Fit | NominalFit = fit_nominal(
                dim, states, [probs[i][dim.name] for i in items], [given[i] for i in items]
            )
        else:
            targets = [float(np.mean(given[i])) for i in items]
            fit = fit_dimension(dim, states, targets, positions)
        heads[dim.name] = fit.head
        loo[dim.name] = dict(zip(items, fit.loo_labels, strict=True))
        result.fitted[dim.name] = len(items)
        used.update(items)
    if heads:
        n_embd = next(iter(hidden.values())).shape[1]
        fitted = {"items": len(used), "reviewers": len(labels), "queues": "audit, import"}
        result.head = Head(heads, n_embd, fitted, layer)
    return loo


def _relabel(
    rubric: Rubric,
    output: Output,
    readout: Readout,
    states: np.ndarray,
    head: Head | None,
    loo: dict[str, dict[str, int]],
) -> Output:
    assert output.probs is not None
    labels = {}
    for dim in rubric.dimensions:
        probs = output.probs[dim.name]
        if head is not None and dim.name in head.dims:
            chosen, margin = head.choose(dim, states, probs)
            chosen = loo[dim.name].get(output.item_id, chosen)
        else:
            chosen, margin = readout.choose(dim, probs)
        labels[dim.name] = Label(dim.values[chosen], probs[chosen], margin)
    return replace(output, labels=labels)


def describe_head(head: Head | dict) -> str:
    """One line on a calibration head (a Head, or the summary a run records)."""
    summary = head.describe() if isinstance(head, Head) else head
    dims = summary.get("dims", {})

    def shown(name: str, d: dict) -> str:
        a = d.get("loo_alpha")
        text = f"{name} {a:.2f}" if a is not None else f"{name} undefined"
        if d.get("kind") == "logistic":  # nominal: out-of-fold figures
            text += f" ({d.get('folds', '?')}-fold, macro-F1 {d.get('cv_macro_f1', 0):.2f})"
        return text

    alphas = ", ".join(shown(name, d) for name, d in sorted(dims.items()))
    nominal = any(d.get("kind") == "logistic" for d in dims.values())
    return (
        f"head on {', '.join(sorted(dims))} ({summary.get('fitted', {}).get('items', '?')} "
        f"reviewed items; block {summary.get('layer', '?')}; "
        + (
            "out-of-sample alpha vs the reviewers' mean or majority "
            if nominal
            else "leave-one-out alpha vs the reviewers' mean "
        )
        + f"{alphas}; sha256 {str(summary.get('sha256', ''))[:12]})"
    )


def describe_run(run: Run) -> str:
    """One line on how a run's labels were read out (for the CLI and the app)."""
    readout = run.settings.get("readout") or {}
    if not readout:
        return "argmax (recorded before readouts)"
    rule, rules = readout.get("rule", "argmax"), readout.get("rules") or {}
    parts = [
        f"rule {rule}"
        + (
            f" ({', '.join(f'{k} {v}' for k, v in rules.items())})"
            if rule == "auto" and rules
            else ""
        )
    ]
    if readout.get("prior", "none") != "none":
        parts.append(f"prior {readout['prior']}")
    if head := readout.get("head"):
        parts.append("calibration " + describe_head(head))
    if "derived_from" in readout:
        parts.append(f"read again from run {readout['derived_from']}")
    return "; ".join(parts)
