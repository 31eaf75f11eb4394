"""Krippendorff's alpha per rubric dimension, with a bootstrap interval over items.

Alpha is computed by the `krippendorff` package at each dimension's own level of measurement,
with the dimension's full value domain. The interval resamples items (each item keeps all of its
coders' values together). Missing values are nan; a model failure is never a default score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import krippendorff
import numpy as np

from annotator.rubric import Dimension, Value


@dataclass(frozen=True)
class Agreement:
    dimension: str
    level: str
    coders: tuple[str, ...]
    n: int  # items with at least two coders' values
    alpha: float | None  # None when undefined (fewer than 2 items, or a single value in all)
    low: float | None  # 95% bootstrap interval
    high: float | None
    note: str = ""

    def as_dict(self) -> dict:
        return {
            "dimension": self.dimension,
            "level": self.level,
            "coders": list(self.coders),
            "n": self.n,
            "alpha": self.alpha,
            "ci95": [self.low, self.high],
            "note": self.note,
        }


def encode(dim: Dimension, value: Value | None) -> float:
    """A value as the number krippendorff expects: the value itself on an interval scale,
    its position in the value list otherwise (ranks for ordinal, codes for nominal)."""
    if value is None:
        return math.nan
    if dim.scale == "interval":
        return float(value)
    return float(dim.values.index(value))


def domain(dim: Dimension) -> list[float]:
    return [encode(dim, v) for v in dim.values]


def alpha(data: np.ndarray, level: str, value_domain: Sequence[float]) -> float | None:
    """Alpha of a coders x items matrix (nan = missing), or None where it is undefined."""
    pairable = np.sum(~np.isnan(data), axis=0) >= 2
    if pairable.sum() < 2:
        return None
    data = data[:, pairable]
    values = data[~np.isnan(data)]
    if np.unique(values).size < 2:
        return None  # every value the same: no variation to agree on
    return float(
        krippendorff.alpha(
            reliability_data=data, level_of_measurement=level, value_domain=list(value_domain)
        )
    )


def agreement(
    dim: Dimension,
    coders: Sequence[str],
    table: Sequence[Sequence[Value | None]],
    bootstrap: int = 1000,
    seed: int = 0,
) -> Agreement:
    """Alpha for `table` (one row per coder, one column per item) on dimension `dim`."""
    data = np.array([[encode(dim, v) for v in row] for row in table], dtype=float)
    if data.ndim != 2:
        data = data.reshape(len(coders), 0)
    pairable = np.sum(~np.isnan(data), axis=0) >= 2
    data = data[:, pairable]
    n = int(data.shape[1])
    dom = domain(dim)
    point = alpha(data, dim.scale, dom)
    if point is None:
        note = "fewer than 2 items" if n < 2 else "all values identical: alpha undefined"
        return Agreement(dim.name, dim.scale, tuple(coders), n, None, None, None, note)
    low = high = None
    note = ""
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(bootstrap):
            pick = rng.integers(0, n, size=n)
            value = alpha(data[:, pick], dim.scale, dom)
            if value is not None:
                samples.append(value)
        if samples:
            low, high = (float(x) for x in np.percentile(samples, [2.5, 97.5]))
        if len(samples) < bootstrap:
            note = f"{bootstrap - len(samples)} of {bootstrap} resamples undefined"
    return Agreement(dim.name, dim.scale, tuple(coders), n, point, low, high, note)


def verdict(value: float | None) -> str:
    """Krippendorff's guidance: >= 0.8 reliable, >= 0.667 tentative conclusions only."""
    if value is None:
        return "undefined"
    if value >= 0.8:
        return "reliable"
    if value >= 0.667:
        return "tentative"
    return "unreliable"
