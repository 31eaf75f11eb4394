"""The model against the reviewers' own agreement (the ceiling), one summary per dimension.

A model that agrees with each reviewer as well as the reviewers agree with each other is as
good as one more reviewer: the reviewers' alpha among themselves is the most a dimension's
labels can be trusted, and on hard dimensions it is below Krippendorff's 0.667 convention.
So a verdict against the conventions alone reads "unreliable" on every row of such a rubric,
the reviewers' own included, and says nothing about the model. The summary here puts both
on one line: the ceiling, the model's mean alpha against the reviewers, its share of the
ceiling, its interval, and a verdict on both scales.

Every statistic comes from the same bootstrap resamples of items (each item keeps all of its
coders' values together), so the interval of the model's mean and of its gap to the ceiling
are paired, as the comparison needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from annotator.agreement import alpha, domain, encode, level, verdict
from annotator.rubric import Dimension, Value


@dataclass(frozen=True)
class Ceiling:
    n: int  # items with the model's label and at least one reviewer's
    raters: float | None  # the reviewers' alpha among themselves; None: one reviewer, undefined
    model: float | None  # alpha(model, reviewer) averaged over the reviewers where defined
    low: float | None  # 95% bootstrap interval of `model`
    high: float | None
    gap_high: float | None  # upper end of the 95% interval of model - raters

    @property
    def share(self) -> float | None:
        """The model's alpha as a share of the ceiling; None where that means nothing (no
        ceiling, or a ceiling at or below chance)."""
        if self.model is None or self.raters is None or self.raters <= 0:
            return None
        return self.model / self.raters

    @property
    def relation(self) -> str | None:
        """'≥ ceiling' (at or above it), '≈ ceiling' (below, but the ceiling lies inside the
        gap's 95% interval) or '< ceiling'; None without a ceiling. Symbols keep the verdict
        short enough for one line per dimension at 80 columns."""
        if self.model is None or self.raters is None:
            return None
        if self.model >= self.raters:
            return "≥ ceiling"
        if self.gap_high is not None and self.gap_high >= 0:
            return "≈ ceiling"
        return "< ceiling"

    @property
    def verdict(self) -> str:
        """Krippendorff's conventions on the model's alpha, then where it stands against the
        reviewers: 'unreliable, ≈ ceiling' is a hard dimension, not a weak model."""
        word = verdict(self.model)
        return word if self.relation is None else f"{word}, {self.relation}"

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "raters": self.raters,
            "model": self.model,
            "ci95": [self.low, self.high],
            "gap_ci95_high": self.gap_high,
            "share": self.share,
            "verdict": self.verdict,
        }


def ceiling(
    dim: Dimension,
    model: Sequence[Value | None],
    reviewers: Sequence[Sequence[Value | None]],
    bootstrap: int = 1000,
    seed: int = 0,
) -> Ceiling:
    """The summary for one dimension: `model` holds the model's value per item, `reviewers`
    one row per reviewer over the same items (None where not labelled)."""
    data = np.array(
        [[encode(dim, v) for v in row] for row in (model, *reviewers)], dtype=float
    ).reshape(1 + len(reviewers), len(model))
    dom = domain(dim)
    n = int(np.sum(~np.isnan(data[0]) & np.any(~np.isnan(data[1:]), axis=0)))

    def stats(cols: np.ndarray) -> tuple[float | None, float | None]:
        part = data[:, cols]
        pairs = [alpha(part[[0, k]], level(dim), dom) for k in range(1, len(part))]
        defined = [p for p in pairs if p is not None]
        mean = float(np.mean(defined)) if defined else None
        raters = alpha(part[1:], level(dim), dom) if len(part) > 2 else None
        return mean, raters

    every = np.arange(data.shape[1])
    mean, raters = stats(every)
    low = high = gap_high = None
    if mean is not None and bootstrap > 0:
        rng = np.random.default_rng(seed)
        means, gaps = [], []
        for _ in range(bootstrap):
            m, r = stats(rng.integers(0, len(every), size=len(every)))
            if m is not None:
                means.append(m)
                if r is not None:
                    gaps.append(m - r)
        if means:
            low, high = (float(x) for x in np.percentile(means, [2.5, 97.5]))
        if gaps:
            gap_high = float(np.percentile(gaps, 97.5))
    return Ceiling(n, raters, mean, low, high, gap_high)
