"""From the model's answer distribution to a label: decision rules and priors.

The engine reads, per dimension, the probability of every allowed value and the hidden state
(after the model's middle block) at the question's last token, just before the answer. It
always continues the prompt with the most probable value, so what the model sees never depends
on the readout; the label is what the readout makes of the distribution. That is why a
readout can be applied again to a project's stored outputs without running the model
(`annotator calibrate`).

Rules (G-Eval style for ordered scales; argmax is the wrong estimator for agreement there):
  argmax   the most probable value (nominal dimensions always use it)
  median   the value where the cumulative probability crosses 0.5 (ordinal)
  mean     the probability-weighted mean of the value positions, rounded (interval)
  auto     median for ordinal, mean for interval, argmax for nominal

Priors (label-free calibration, arXiv 2102.09690): the distribution is divided by a prior and
renormalised before the rule. `content-free`: the model's answer to items whose inputs say
nothing ("N/A", "", "[MASK]"), computed once per run from the rubric; `batch`: the mean
distribution over a run's items (so a label depends on which items share the run; only
`annotator calibrate --prior batch` applies it, to a finished run). Removing a prior cannot fix
a signal that runs against the raters; a fitted head (annotator/calibration.py) can.

Every decision has a margin in [0, 1], how far it is from flipping, which near-tie flags use:
argmax, the winner's probability minus the runner-up's; median, twice the distance of the 0.5
crossing from the nearer edge of the chosen value's cumulative interval; mean, one minus twice
the distance from the mean to the chosen position.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from annotator.errors import AnnotatorError
from annotator.rubric import Dimension, Rubric

RULES = ("auto", "argmax", "median", "mean")
PRIORS = ("none", "content-free", "batch")
CONTENT_FREE_TEXTS = ("N/A", "", "[MASK]")  # the inputs of a content-free item


def rule_for(dim: Dimension, rule: str) -> str:
    """The rule a dimension uses: nominal values have no order, so always argmax there."""
    if dim.scale == "nominal":
        return "argmax"
    if rule == "auto":
        return "median" if dim.scale == "ordinal" else "mean"
    return rule


def decide(probs: Sequence[float], rule: str) -> tuple[int, float]:
    """(index of the chosen value, margin) for one distribution over a dimension's values."""
    if rule == "argmax":
        # Highest probability wins; exact ties go to the value listed first (deterministic).
        order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
        return order[0], probs[order[0]] - probs[order[1]]
    if rule == "median":
        below = 0.0
        for index, p in enumerate(probs):
            if below + p >= 0.5 or index == len(probs) - 1:
                return index, min(1.0, 2 * min(below + p - 0.5, 0.5 - below))
            below += p
    if rule == "mean":
        mean = sum(i * p for i, p in enumerate(probs)) / (sum(probs) or 1.0)
        index = min(len(probs) - 1, math.floor(mean + 0.5))
        return index, max(0.0, 1 - 2 * abs(mean - index))
    raise AnnotatorError(f"unknown decision rule {rule!r} (one of {', '.join(RULES[1:])})")


def apply_prior(probs: Sequence[float], prior: Sequence[float] | None) -> list[float]:
    """`probs` divided by `prior`, renormalised (unchanged without a prior)."""
    if prior is None:
        return list(probs)
    scaled = [p / max(q, 1e-9) for p, q in zip(probs, prior, strict=True)]
    total = sum(scaled) or 1.0
    return [s / total for s in scaled]


def mean_distribution(rows: Sequence[Sequence[float]]) -> list[float]:
    """The average of several distributions over the same values (a batch or content-free prior)."""
    n = len(rows)
    return [sum(r[i] for r in rows) / n for i in range(len(rows[0]))]


@dataclass(frozen=True)
class Readout:
    """How a run turns distributions into labels; recorded with the run (`describe`)."""

    rule: str = "auto"  # the default everywhere (`annotate --rule`): see RULES
    prior: str = "none"
    # The prior distributions, per dimension, once computed (content-free: by the engine).
    priors: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    # False (`annotate --no-head`): a calibration head the model file carries is not applied;
    # the rule labels every dimension, as for the file's model alone. Recorded when False.
    model_head: bool = True

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise AnnotatorError(f"unknown decision rule {self.rule!r} (one of {', '.join(RULES)})")
        if self.prior not in PRIORS:
            raise AnnotatorError(f"unknown prior {self.prior!r} (one of {', '.join(PRIORS)})")

    def choose(self, dim: Dimension, probs: Sequence[float]) -> tuple[int, float]:
        """(chosen value index, margin) for `dim`'s raw distribution."""
        prior = self.priors.get(dim.name) if self.prior != "none" else None
        if self.prior != "none" and prior is None:
            raise AnnotatorError(f"prior {self.prior!r} has no distribution for {dim.name!r}")
        return decide(apply_prior(probs, prior), rule_for(dim, self.rule))

    def describe(self, rubric: Rubric) -> dict:
        return {
            "rule": self.rule,
            "rules": {d.name: rule_for(d, self.rule) for d in rubric.dimensions},
            "prior": self.prior,
            "priors": {k: [round(p, 6) for p in v] for k, v in sorted(self.priors.items())},
            **({} if self.model_head else {"model_head": "not applied (--no-head)"}),
        }
