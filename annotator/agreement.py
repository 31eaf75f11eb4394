"""Krippendorff's alpha per rubric dimension, with a bootstrap interval over items.

Alpha is computed by the `krippendorff` package at each dimension's own level of measurement,
with the dimension's full value domain. A multi-label dimension's values are sets: alpha uses
the MASI distance between sets (Passonneau 2006, "Measuring agreement on set-valued items
(MASI) for semantic and pragmatic annotation"; the distance NLTK's agreement module uses),
given to the package as its distance callable, over the sets the coders used. The interval resamples items (each item keeps all of its
coders' values together). Missing values are nan; a model failure is never a default score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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


def encode(dim: Dimension, value: Value | list | None) -> float:
    """A value as the number krippendorff expects: the value itself on an interval scale,
    its position in the value list otherwise (ranks for ordinal, codes for nominal); a set
    (multi-label) as the bit mask of its values' positions (exact in a float up to 53 values)."""
    if value is None:
        return math.nan
    if dim.multi:
        mask = sum(1 << dim.values.index(v) for v in set(value))  # type: ignore[arg-type]
        if mask >= 2**53:
            raise ValueError(f"{dim.name}: set agreement handles at most 53 values")
        return float(mask)
    if dim.scale == "interval":
        return float(value)
    return float(dim.values.index(value))


def domain(dim: Dimension) -> list[float] | None:
    """Every value's code; None for a multi-label dimension (the sets the coders used)."""
    return None if dim.multi else [encode(dim, v) for v in dim.values]


def level(dim: Dimension) -> str | Callable:
    """The level of measurement krippendorff is given: the scale, or the set distance."""
    return masi_metric if dim.multi else dim.scale


def level_name(dim: Dimension) -> str:
    return "masi" if dim.multi else dim.scale


def _bits(masks: np.ndarray) -> np.ndarray:
    return np.bitwise_count(masks.astype(np.int64))


def jaccard_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - |A & B| / |A | B| between sets given as bit masks (two empty sets: 0)."""
    a, b = np.broadcast_arrays(a.astype(np.int64), b.astype(np.int64))
    union = _bits(a | b)
    return np.where(union == 0, 0.0, 1.0 - _bits(a & b) / np.maximum(union, 1))


def masi_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MASI: 1 - Jaccard x monotonicity, monotonicity 1 for equal sets, 2/3 when one holds
    the other, 1/3 when they overlap otherwise, 0 when disjoint (Passonneau 2006)."""
    a, b = np.broadcast_arrays(a.astype(np.int64), b.astype(np.int64))
    both = a & b
    mono = np.select(
        [a == b, (both == a) | (both == b), both != 0], [1.0, 2 / 3, 1 / 3], default=0.0
    )
    union = _bits(a | b)
    jac = np.where(union == 0, 1.0, _bits(both) / np.maximum(union, 1))
    return 1.0 - jac * mono


def masi_metric(v1: np.ndarray, v2: np.ndarray, **_: object) -> np.ndarray:
    """`masi_distance` in the shape of a krippendorff distance callable. The package's
    callables return the distance alpha sums (delta squared for interval); MASI is used as
    that distance as it is, as NLTK's alpha does."""
    return masi_distance(v1, v2)


def alpha(
    data: np.ndarray, level: str | Callable, value_domain: Sequence[float] | None
) -> float | None:
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
            reliability_data=data,
            level_of_measurement=level,
            value_domain=None if value_domain is None else list(value_domain),
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
    dom, lev = domain(dim), level(dim)
    point = alpha(data, lev, dom)
    if point is None:
        note = "fewer than 2 items" if n < 2 else "all values identical: alpha undefined"
        return Agreement(dim.name, level_name(dim), tuple(coders), n, None, None, None, note)
    low = high = None
    note = ""
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(bootstrap):
            pick = rng.integers(0, n, size=n)
            value = alpha(data[:, pick], lev, dom)
            if value is not None:
                samples.append(value)
        if samples:
            low, high = (float(x) for x in np.percentile(samples, [2.5, 97.5]))
        if len(samples) < bootstrap:
            note = f"{bootstrap - len(samples)} of {bootstrap} resamples undefined"
    return Agreement(dim.name, level_name(dim), tuple(coders), n, point, low, high, note)


def verdict(value: float | None) -> str:
    """Krippendorff's guidance: >= 0.8 reliable, >= 0.667 tentative conclusions only."""
    if value is None:
        return "undefined"
    if value >= 0.8:
        return "reliable"
    if value >= 0.667:
        return "tentative"
    return "unreliable"
