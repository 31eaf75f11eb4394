"""Validation: the engine's decoding on held-out items, scored against the human labels.

Alpha is Krippendorff's, per dimension, at the dimension's own level (annotator.agreement),
never pooled across dimensions. An undefined alpha (too few items, or a single value in all)
stays undefined: it is never replaced by a number. The validation loss is the answer-token
loss on the un-augmented inference prompt.

Two labels per item and dimension are scored: the model's own answer (argmax, what the merged
model answers alone) and the label of a calibration head fitted on the validation items'
hidden states exactly as `annotator calibrate` fits one (annotator/calibration/heads.py ridge
for ordinal and interval dimensions, annotator/calibration/nominal.py for nominal ones; the
same MIN_ITEMS rule), scored out of fold: leave-one-out for ridge, 5-fold for nominal heads,
so no item's own label predicted it. With each, the collapse signal: the share of the
validation items given the commonest label (1.0: one value for every item). A dimension is
collapsed when those labels take one value where the human labels take two or more, on at
least MIN_ITEMS validation items (fewer: one answer for all of three items is no evidence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from annotator.agreement import agreement
from annotator.calibration.heads import MIN_ITEMS, Fit, fit_dimension
from annotator.calibration.nominal import NominalFit, fit_nominal
from annotator.rubric import Dimension, Rubric
from annotator.train.data import Example, LabeledItem, batches
from annotator.train.loss import answer_loss
from annotator.train.scoring import Scored


@dataclass
class Evaluation:
    step: int
    epoch: float
    val_loss: float
    alpha: dict[str, float | None]
    accuracy: dict[str, float]
    n: int
    train_loss: float | None = None
    notes: dict[str, str] = field(default_factory=dict)
    head_alpha: dict[str, float | None] = field(default_factory=dict)
    share: dict[str, float] = field(default_factory=dict)  # commonest answer's share
    head_share: dict[str, float | None] = field(default_factory=dict)  # same, head labels
    collapsed: dict[str, list[str]] = field(default_factory=dict)  # dim -> ["argmax", "head"]

    @property
    def mean_alpha(self) -> float | None:
        return _mean(self.alpha)

    @property
    def mean_head_alpha(self) -> float | None:
        return _mean(self.head_alpha)

    def key(self) -> tuple[bool, float, float, float]:
        """Best = not collapsed, then the highest mean head alpha (what a calibrated file
        labels with), then the highest mean argmax alpha, then the lowest validation loss.
        An undefined mean ranks below any defined one. A later evaluation replaces the kept
        one only when strictly better, so exact ties keep the earlier checkpoint."""
        return (
            not self.collapsed,
            _or_lowest(self.mean_head_alpha),
            _or_lowest(self.mean_alpha),
            -self.val_loss,
        )

    def as_dict(self) -> dict:
        return {
            "step": self.step,
            "epoch": round(self.epoch, 3),
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "alpha": self.alpha,
            "mean_alpha": self.mean_alpha,
            "head_alpha": self.head_alpha,
            "mean_head_alpha": self.mean_head_alpha,
            "share": self.share,
            "head_share": self.head_share,
            "collapsed": self.collapsed,
            "accuracy": self.accuracy,
            "n": self.n,
            "notes": self.notes,
        }


def evaluation(
    rubric: Rubric,
    items: list[LabeledItem],
    scored: Scored,
    step: int,
    epoch: float,
    val_loss: float,
) -> Evaluation:
    alphas: dict[str, float | None] = {}
    accuracy: dict[str, float] = {}
    notes: dict[str, str] = {}
    result = Evaluation(step, epoch, val_loss, alphas, accuracy, len(items), notes=notes)
    for dim in rubric.dimensions:
        human = [i.labels[dim.name] for i in items]
        model = [s[dim.name][0] for s in scored.decisions]
        found = agreement(dim, ("human", "model"), [human, model], bootstrap=0)
        alphas[dim.name] = found.alpha
        if found.note:
            notes[dim.name] = found.note
        accuracy[dim.name] = sum(h == m for h, m in zip(human, model, strict=True)) / max(
            len(items), 1
        )
        result.share[dim.name] = commonest_share([dim.values.index(v) for v in model])
        head_labels = _head_labels(dim, items, scored, result)
        if len(set(human)) >= 2 and len(items) >= MIN_ITEMS:
            result.collapsed[dim.name] = [
                name
                for name, labels in (("argmax", model), ("head", head_labels))
                if labels is not None and len(set(labels)) == 1
            ]
    result.collapsed = {k: v for k, v in result.collapsed.items() if v}
    return result


def _head_labels(
    dim: Dimension, items: list[LabeledItem], scored: Scored, result: Evaluation
) -> list[int] | None:
    """Fit dimension `dim`'s head on the items' hidden states as `annotator calibrate` does;
    record its out-of-fold alpha and commonest share in `result`; return its out-of-fold
    labels (None, with a note, where calibrate would fit no head)."""
    given = [_given(dim, item) for item in items]
    positions = [p for g in given for p in g]
    result.head_alpha[dim.name] = None
    result.head_share[dim.name] = None
    if scored.states is None or len(items) < MIN_ITEMS or len(set(positions)) < 2:
        result.notes[f"{dim.name} head"] = (
            f"{len(items)} validation items"
            + (" with one value" if len(set(positions)) < 2 else "")
            + f"; a head needs {MIN_ITEMS} with two values or more"
        )
        return None
    fit: Fit | NominalFit
    if dim.scale == "nominal":
        probs = [p[dim.name] for p in scored.probs]
        fit = fit_nominal(dim, scored.states, probs, given)
    else:
        targets = [sum(g) / len(g) for g in given]
        fit = fit_dimension(dim, scored.states, targets, positions)
    result.head_alpha[dim.name] = fit.head.loo_alpha
    result.head_share[dim.name] = commonest_share(fit.loo_labels)
    return fit.loo_labels


def _given(dim: Dimension, item: LabeledItem) -> list[int]:
    """The value positions the item's raters gave (from the shares of its ratings)."""
    found = []
    for value, share in item.target(dim.name).items():
        found += [dim.values.index(value)] * max(1, round(share * item.ratings))
    return found


def commonest_share(labels: list[int]) -> float:
    """The share of the labels that the commonest one takes (1.0: one value only)."""
    if not labels:
        return math.nan
    return max(labels.count(v) for v in set(labels)) / len(labels)


def _mean(values: dict[str, float | None]) -> float | None:
    defined = [a for a in values.values() if a is not None]
    return sum(defined) / len(defined) if defined else None


def _or_lowest(value: float | None) -> float:
    return value if value is not None else -math.inf


@torch.no_grad()
def validation_loss(model, examples: list[Example], batch_size: int, pad_id: int, device) -> float:
    """Mean answer-token loss over `examples`, in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for micro in batches(examples, batch_size):
            loss_sum, n = answer_loss(model, micro, pad_id, device)
            total += loss_sum.item()
            count += n
    finally:
        model.train(was_training)
    return total / max(count, 1)
