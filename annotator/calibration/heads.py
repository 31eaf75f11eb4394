"""Calibration heads: a small per-dimension probe fitted on labelled items.

For an ordinal or interval dimension the head is a ridge regression from the item's hidden
states to the label's position on the scale, then thresholds on that score. The features are
the mean of the hidden states at all of the item's decision points, read after the model's
middle block (what the engine reads anyway, annotator/engine.py and annotator/layer_tap.py).
Each decision point is a noisy reading of the same item; on the rubric development set the
mean beat each dimension's own state, and the middle block beat the final hidden state (mean
alpha 0.24 against 0.12 by 5-fold cross-validation over held-out dialogues, bench/quality.py
usr-tc). The block a head was fitted on travels with it (`layer`) and the engine reads that
one. The thresholds keep the labelled data's value proportions: rounding a regression pulls
every item towards the mean rating and collapses to one value, cutting at the labelled shares
does not.

Fitting is leave-one-out: the ridge strength is chosen by the closed-form leave-one-out error,
the thresholds are cut on leave-one-out scores (what scores of new items look like), and the
alpha a fit reports compares leave-one-out labels with the labels, so no item's own label was
used to predict it. A nominal dimension gets a multinomial logistic head on the same features
(annotator/calibration/nominal.py).

A head is a few kB per dimension (weights as float32, base64 in JSON): it travels in a GGUF
file's metadata (`annotator.calibration`) and in a run's record. Hidden states are stored in
float16 in a project, so a head always scores float16-rounded states: labels from a project's
stored outputs and from a fresh run are the same.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from annotator.calibration.features import features
from annotator.errors import AnnotatorError, printable
from annotator.rubric import Dimension, Rubric

if TYPE_CHECKING:
    from annotator.calibration.nominal import NominalHead

# 2: the head names the block it reads (format 1 read the final hidden state);
# 3: each dimension names its kind, ridge (ordinal, interval) or logistic (nominal).
FORMAT = 3
KINDS = {2: "hidden-ridge", 3: "hidden-probe"}  # format -> the JSON's kind
FEATURES = "mean-of-decision-states"
RIDGE_GRID = tuple(10.0**k for k in range(-2, 7))  # relative to the mean squared singular value
MIN_ITEMS = 20  # fewer labelled items than this: no head for the dimension


@dataclass(frozen=True)
class DimHead:
    weights: np.ndarray  # float32 (n_embd,): score = hidden . weights + bias
    bias: float
    thresholds: tuple[float, ...]  # ascending, one fewer than the dimension's values
    spread: float  # standard deviation of the leave-one-out scores (margins are relative to it)
    n: int  # labelled items it was fitted on
    ridge: float  # the chosen ridge strength
    loo_alpha: float | None  # alpha(leave-one-out labels, labels), None when undefined

    def score(self, hidden: np.ndarray) -> float:
        """The score of an item's hidden states (dimensions x n_embd)."""
        return float(features(hidden) @ self.weights.astype(np.float64) + self.bias)

    def choose(self, hidden: np.ndarray) -> tuple[int, float]:
        """(value index, margin): the value whose band holds the score; the margin is the
        distance to the nearest threshold in units of the score's spread, at most 1."""
        score = self.score(hidden)
        index = sum(score >= t for t in self.thresholds)
        nearest = min((abs(score - t) for t in self.thresholds), default=math.inf)
        return index, min(1.0, nearest / (self.spread or 1.0))


@dataclass(frozen=True)
class Head:
    dims: Mapping[str, DimHead | NominalHead]
    n_embd: int
    fitted: Mapping[str, object]  # what it was fitted on: counts and names, never item ids
    layer: int  # the block whose output it reads (EngineSettings.hidden_layer)

    def choose(
        self, dim: Dimension, hidden: np.ndarray, probs: Sequence[float] = ()
    ) -> tuple[int, float]:
        """(value index, margin) for `dim` from the item's hidden states (dimensions x n_embd)
        and the model's probabilities of `dim`'s values (a nominal head may read them)."""
        head = self.dims[dim.name]
        return head.choose(hidden) if isinstance(head, DimHead) else head.choose(hidden, probs)

    def to_json(self) -> str:
        dims = {}
        for name, d in sorted(self.dims.items()):
            if not isinstance(d, DimHead):
                dims[name] = d.to_dict(_base64_float32)
                continue
            dims[name] = {
                "kind": "ridge",
                "weights": _base64_float32(d.weights),
                "bias": d.bias,
                "thresholds": list(d.thresholds),
                "spread": d.spread,
                "n": d.n,
                "ridge": d.ridge,
                "loo_alpha": d.loo_alpha,
            }
        return json.dumps(
            {
                "format": FORMAT,
                "kind": KINDS[FORMAT],
                "features": FEATURES,
                "n_embd": self.n_embd,
                "layer": self.layer,
                "dims": dims,
                "fitted": dict(self.fitted),
            },
            sort_keys=True,
        )

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def describe(self) -> dict:
        """What a run records and `inspect` shows: everything but the weights."""
        return {
            "kind": KINDS[FORMAT],
            "sha256": self.sha256,
            "fitted": dict(self.fitted),
            "layer": self.layer,
            "dims": {
                name: {
                    "n": d.n,
                    "loo_alpha": d.loo_alpha,
                    "thresholds": [round(t, 4) for t in d.thresholds],
                }
                if isinstance(d, DimHead)
                else d.summary()
                for name, d in sorted(self.dims.items())
            },
        }


def _base64_float32(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def head_from_json(text: str, source: str, rubric: Rubric | None = None) -> Head:
    """A head read from untrusted JSON (a model file's metadata); one-line errors name `source`
    and the key. Every number is checked (type, size, finiteness, sign) and every name is
    printable; the model's n_embd and block count are checked where the model is loaded
    (annotator/engine.py)."""

    def bad(why: str) -> AnnotatorError:
        return AnnotatorError(f"{source}: calibration head {why}")

    def number(
        d: Mapping,
        key: str | int,
        where: str,
        *,
        integer: bool = False,
        low: float | None = None,
        high: float | None = None,
    ) -> float:
        value, label = d.get(key), f"{where}.{key}" if where else key
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise bad(f"{label} must be {kind}")
        try:
            as_float = float(value)
        except OverflowError:
            as_float = math.inf
        if not math.isfinite(as_float):
            raise bad(f"{label} must be finite")
        if (low is not None and as_float < low) or (high is not None and as_float > high):

            def shown(x: float) -> str:
                return str(int(x)) if float(x).is_integer() else f"{x:g}"

            raise bad(
                f"{label} must be "
                + (
                    f"between {shown(low)} and {shown(high)}"
                    if low is not None and high is not None
                    else f"at least {shown(low)}"
                    if low is not None
                    else f"at most {shown(high)}"
                )
            )
        return int(value) if integer else as_float

    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise bad("is not valid JSON") from None
    if isinstance(data, dict) and data.get("format") == 1:
        raise bad(
            "is format 1 (it read the final hidden state); fit it again with "
            "`annotator calibrate` on a run annotated by this version"
        )
    if (
        not isinstance(data, dict)
        or data.get("format") not in KINDS
        or data.get("kind") != KINDS[data["format"]]
        or data.get("features") != FEATURES
    ):
        raise bad(
            f"must be a JSON object with format {FORMAT} and kind {KINDS[FORMAT]!r} (or "
            f"format 2 and kind {KINDS[2]!r}) and features {FEATURES!r}"
        )
    if not isinstance(data.get("dims"), dict) or not data["dims"]:
        raise bad("needs dims, an object with a head per dimension")
    n_embd = int(number(data, "n_embd", "", integer=True, low=1, high=65536))
    layer = int(number(data, "layer", "", integer=True, low=0, high=4095))
    dims: dict[str, DimHead | NominalHead] = {}
    for name, d in data["dims"].items():
        if not name.isprintable() or not 0 < len(name) <= 64:
            raise bad(
                f"dims has a dimension name that is not printable or too long "
                f"({printable(name, 64)!r})"
            )
        where = f"dims.{name}"
        if not isinstance(d, dict):
            raise bad(f"{where} must be an object")
        # Format 2 had ridge heads only; format 3 names each dimension's kind.
        kind = d.get("kind", "ridge") if data["format"] == 2 else d.get("kind")
        if kind not in ("ridge", "logistic"):
            raise bad(f"{where}.kind must be 'ridge' or 'logistic'")
        raw = d.get("weights")
        # A logistic head holds a row per value (at most 1024 values of 640 floats, base64).
        if not isinstance(raw, str) or len(raw) > 8 * 65536 * (1024 if kind == "logistic" else 1):
            raise bad(f"{where}.weights must be base64 text")
        try:
            weights = np.frombuffer(base64.b64decode(raw, validate=True), dtype="<f4")
        except ValueError:
            raise bad(f"{where}.weights must be base64 float32 values") from None
        dim = None
        if rubric is not None:
            try:
                dim = rubric.dimension(name)
            except KeyError:
                raise bad(f"names dimension {name!r}, which the rubric does not have") from None
        if kind == "logistic":
            from annotator.calibration.nominal import nominal_from_dict

            dims[name] = nominal_from_dict(d, where, n_embd, weights, number, bad, dim)
            continue
        if weights.shape != (n_embd,) or not np.isfinite(weights).all():
            raise bad(f"{where}.weights must be {n_embd} (n_embd) finite float32 values")
        cuts = d.get("thresholds")
        if not isinstance(cuts, list) or len(cuts) > 1024:
            raise bad(f"{where}.thresholds must be a list")
        thresholds = tuple(
            number(dict(enumerate(cuts)), i, f"{where}.thresholds") for i in range(len(cuts))
        )
        if list(thresholds) != sorted(thresholds):
            raise bad(f"{where}.thresholds must be in ascending order")
        bias = number(d, "bias", where)
        spread = number(d, "spread", where, low=0)  # margins are distances over the spread
        ridge = number(d, "ridge", where, low=0)
        n = int(number(d, "n", where, integer=True, low=1, high=2**31))
        loo = None if d.get("loo_alpha") is None else number(d, "loo_alpha", where, high=1)
        if dim is not None and (dim.scale == "nominal" or len(thresholds) != len(dim.values) - 1):
            raise bad(f"{where} does not fit the rubric's values")
        dims[name] = DimHead(weights.astype(np.float32), bias, thresholds, spread, n, ridge, loo)
    fitted = data.get("fitted", {})
    if not isinstance(fitted, dict) or len(fitted) > 32:
        raise bad("fitted must be an object")
    for key, value in fitted.items():
        if not key.isprintable() or len(key) > 64:
            raise bad(
                f"fitted has a key that is not printable or too long ({printable(key, 64)!r})"
            )
        if isinstance(value, str):
            if not value.isprintable() or len(value) > 200:
                raise bad(f"fitted.{key} is not printable or too long")
        else:
            number(fitted, key, "fitted", integer=True, low=0)
    return Head(dims, n_embd, fitted, layer)


# -- fitting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    head: DimHead
    loo_labels: list[int]  # per fitted item, its leave-one-out value index


def fit_dimension(
    dim: Dimension, hidden: np.ndarray, targets: Sequence[float], shares_from: Sequence[int]
) -> Fit:
    """Fit one dimension's head.

    hidden: (n, dimensions, n_embd) states per item, or (n, n_embd) features; targets: per
    item, the label's position on the scale (the mean position when several reviewers
    labelled it); shares_from: every label given (positions),
    whose value shares the thresholds keep."""
    from annotator.agreement import alpha  # krippendorff, imported only when fitting

    x = np.stack([features(h) for h in hidden])
    y = np.asarray(targets, dtype=np.float64)
    mean_x = x.mean(axis=0)
    scale = x.std(axis=0)  # each feature to unit variance
    scale[scale == 0] = 1.0
    _, lam, loo_scores = _ridge_loo(x, y, mean_x, scale)
    # The same solution in the space of raw (float16-rounded) hidden states.
    z = (x - mean_x) / scale
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    coef_z = vt.T @ ((s / (s**2 + lam)) * (u.T @ (y - y.mean())))
    weights = (coef_z / scale).astype(np.float32)
    bias = float(y.mean() - (mean_x / scale) @ coef_z)
    n = len(y)
    thresholds = share_thresholds(loo_scores, shares_from, len(dim.values))
    loo_labels = [int(sum(v >= t for t in thresholds)) for v in loo_scores]
    level = "interval" if dim.scale == "interval" else "ordinal"
    positions = [float(i) for i in range(len(dim.values))]
    rounded = [float(round(v)) for v in y]
    loo_alpha = alpha(np.array([loo_labels, rounded], dtype=float), level, positions)
    head = DimHead(
        weights,
        bias,
        tuple(thresholds),
        float(np.std(loo_scores)),
        n,
        lam,
        None if loo_alpha is None else round(loo_alpha, 6),
    )
    return Fit(head, loo_labels)


def _ridge_loo(
    x: np.ndarray, y: np.ndarray, mean_x: np.ndarray, scale: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """(leave-one-out mean squared error, ridge strength, leave-one-out predictions) of the
    best ridge strength on RIDGE_GRID, in closed form (the hat matrix's diagonal)."""
    n = len(y)
    u, s, _ = np.linalg.svd((x - mean_x) / scale, full_matrices=False)
    uty = u.T @ (y - y.mean())
    base = float(np.mean(s**2)) or 1.0
    best: tuple[float, float, np.ndarray] | None = None
    for factor in RIDGE_GRID:
        lam = factor * base
        shrink = s**2 / (s**2 + lam)
        fitted = y.mean() + u @ (shrink * uty)
        leverage = (u**2) @ shrink + 1.0 / n  # + 1/n: the intercept
        loo = y - (y - fitted) / (1 - leverage)
        error = float(np.mean((loo - y) ** 2))
        if best is None or error < best[0] - 1e-12:
            best = (error, lam, loo)
    assert best is not None
    return best


def share_thresholds(scores: Sequence[float], labels: Sequence[int], n_values: int) -> list[float]:
    """Cut points on `scores` that give each value the share it has among `labels`."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_values)
    cumulative = np.cumsum(counts)[:-1] / counts.sum()
    cuts = []
    for share in cumulative:
        # k items go below the cut; a cut halfway between neighbours, outside at the ends.
        k = int(np.rint(share * len(ordered)))
        if k <= 0:
            cuts.append(float(ordered[0] - 1.0))
        elif k >= len(ordered):
            cuts.append(float(ordered[-1] + 1.0))
        else:
            cuts.append(float((ordered[k - 1] + ordered[k]) / 2))
    return sorted(cuts)
