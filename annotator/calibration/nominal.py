"""Nominal heads: a regularised multinomial logistic regression per nominal dimension.

Its inputs are one of two, whichever cross-validates better: the ordinal heads' features
(annotator/calibration/heads.py: the mean of the item's float16-rounded decision states after
the middle block), or the log of the model's own probabilities of the dimension's values (a
learned recalibration of the model's answer, which keeps what a fine-tuned adapter learned;
on GoEmotions with the bundled adapter it beat the states by cross-validation, 0.31 against
about 0.14 alpha, bench/nominal_quality.py and README). Applying a head needs only numpy,
softmax(W x + b); fitting uses scikit-learn's LogisticRegression (L2, multinomial), imported
only when fitting.

Rare values: each labelled item's weight is multiplied by (n / (values x its value's count))
to a power: 1 is "balanced" class weights (a value seen on 2% of the items pulls as hard as
one seen on 40%), 0 none. Without any the head chooses the frequent values (on GoEmotions:
"neutral" and "admiration") and macro-F1, which weighs every value alike, stays low; fully
balanced, accuracy drops. The power, the inputs and the L2 strength are chosen by K-fold
cross-validation on the fitted items only (folds dealt round-robin within each value, so every
fold sees the rare values; deterministic), by the out-of-fold alpha (nominal), first among the
settings that improve on the model's own answer (argmax) on the same items: out-of-fold
accuracy not below the answer's and macro-F1 above it. A head that would buy balance across
values with the model's accuracy is chosen only where no setting improves on both (as when the
answer is one frequent value: accurate, and worthless). The labels a fit reports for its own
items, and the alpha, macro-F1 and accuracy it reports, are the out-of-fold ones: no item's own
label was used to predict it. A value no reviewer gave cannot be chosen: the head holds
weights only for the values seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from annotator.calibration.features import features
from annotator.errors import AnnotatorError
from annotator.rubric import Dimension

KIND = "logistic"
C_GRID = tuple(10.0**k for k in range(-3, 2))  # inverse L2 strength on standardised features
POWERS = (0.0, 0.5, 1.0)  # class-balance exponents tried
INPUTS = ("states", "probs")  # mean middle-block state, or log value probabilities
FOLDS = 5
FLOOR = 1e-9  # probabilities below it count as it (log of 0)


@dataclass(frozen=True)
class NominalHead:
    weights: np.ndarray  # float32 (len(classes), inputs): logits = weights @ x + biases
    biases: tuple[float, ...]
    classes: tuple[int, ...]  # the value indices it can choose, ascending
    n: int  # labelled items it was fitted on
    c: float  # the chosen inverse L2 strength
    cv_alpha: float | None  # alpha (nominal) of the out-of-fold labels vs the labels
    cv_macro_f1: float  # macro-F1 of the out-of-fold labels, over the values seen
    inputs: str = "states"  # one of INPUTS
    power: float = 1.0  # the class-balance exponent chosen
    cv_accuracy: float | None = None  # accuracy of the out-of-fold labels (None: not recorded)
    model_accuracy: float | None = None  # the model's own answer's on the same items

    @property
    def loo_alpha(self) -> float | None:
        """The out-of-fold alpha, under the name ordinal heads report theirs by."""
        return self.cv_alpha

    def probabilities(self, hidden: np.ndarray, probs: Sequence[float]) -> np.ndarray:
        """Softmax over `classes` for an item's hidden states (dimensions x n_embd) and the
        model's probabilities of the dimension's values."""
        x = features(hidden) if self.inputs == "states" else log_probs(probs)
        logits = self.weights.astype(np.float64) @ x + np.asarray(self.biases)
        logits -= logits.max()
        exp = np.exp(logits)
        return exp / exp.sum()

    def choose(self, hidden: np.ndarray, probs: Sequence[float]) -> tuple[int, float]:
        """(value index, margin): the most probable value; the margin is its probability minus
        the runner-up's (0 to 1, as for the argmax rule). Exact ties go to the lower index."""
        probs = self.probabilities(hidden, probs)
        order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
        margin = probs[order[0]] - probs[order[1]] if len(order) > 1 else 1.0
        return self.classes[order[0]], float(min(1.0, max(0.0, margin)))

    def to_dict(self, encode: Callable[[np.ndarray], str]) -> dict:
        return {
            "kind": KIND,
            "weights": encode(self.weights),
            "biases": list(self.biases),
            "classes": list(self.classes),
            "n": self.n,
            "c": self.c,
            "cv_alpha": self.cv_alpha,
            "cv_macro_f1": self.cv_macro_f1,
            "inputs": self.inputs,
            "power": self.power,
            **({"n_values": int(self.weights.shape[1])} if self.inputs == "probs" else {}),
            **self._accuracies(),
        }

    def _accuracies(self) -> dict:
        found = {"cv_accuracy": self.cv_accuracy, "model_accuracy": self.model_accuracy}
        return {k: round(v, 4) for k, v in found.items() if v is not None}

    def summary(self) -> dict:
        return {
            "kind": KIND,
            "n": self.n,
            "loo_alpha": self.cv_alpha,  # what describe_head shows for every head
            "cv_macro_f1": round(self.cv_macro_f1, 4),
            "folds": FOLDS,
            "values": len(self.classes),
            "inputs": self.inputs,
            "power": self.power,
            **self._accuracies(),
        }


def log_probs(probs: Sequence[float]) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), FLOOR))


def nominal_from_dict(
    d: Mapping,
    where: str,
    n_embd: int,
    weights: np.ndarray,
    number: Callable[..., float],
    bad: Callable[[str], AnnotatorError],
    dim: Dimension | None,
) -> NominalHead:
    """A nominal head from untrusted JSON (heads.head_from_json decoded `weights` and checks
    the common keys; `number` and `bad` are its checked reader and one-line error)."""
    classes_raw = d.get("classes")
    if not isinstance(classes_raw, list) or not 2 <= len(classes_raw) <= 1024:
        raise bad(f"{where}.classes must be a list of 2 to 1024 value indices")
    listed = dict(enumerate(classes_raw))
    classes = tuple(
        int(number(listed, i, f"{where}.classes", integer=True, low=0, high=1023))
        for i in range(len(classes_raw))
    )
    if list(classes) != sorted(set(classes)):
        raise bad(f"{where}.classes must be distinct and ascending")
    if dim is not None and (dim.scale != "nominal" or classes[-1] >= len(dim.values)):
        raise bad(f"{where} does not fit the rubric's values")
    inputs = d.get("inputs")
    if inputs not in INPUTS:
        raise bad(f"{where}.inputs must be one of {', '.join(INPUTS)}")
    if inputs == "probs":  # one input per value of the dimension
        n_in, what = int(number(d, "n_values", where, integer=True, low=2, high=1024)), "n_values"
        if classes[-1] >= n_in or (dim is not None and n_in != len(dim.values)):
            raise bad(f"{where}.n_values does not fit the classes or the rubric's values")
    else:
        n_in, what = n_embd, "n_embd"
    k = len(classes)
    if weights.shape != (k * n_in,) or not np.isfinite(weights).all():
        raise bad(f"{where}.weights must be {k} x {n_in} (classes x {what}) finite float32 values")
    biases_raw = d.get("biases")
    if not isinstance(biases_raw, list) or len(biases_raw) != k:
        raise bad(f"{where}.biases must be a list of {k} numbers (one per class)")
    listed = dict(enumerate(biases_raw))
    biases = tuple(number(listed, i, f"{where}.biases") for i in range(k))
    n = int(number(d, "n", where, integer=True, low=1, high=2**31))
    c = number(d, "c", where, low=0)
    if c == 0:
        raise bad(f"{where}.c must be above 0")
    cv = None if d.get("cv_alpha") is None else number(d, "cv_alpha", where, high=1)
    f1 = number(d, "cv_macro_f1", where, low=0, high=1)
    power = number(d, "power", where, low=0, high=1)
    accuracies = [  # recorded since heads were chosen against the model's own accuracy
        None if d.get(key) is None else number(d, key, where, low=0, high=1)
        for key in ("cv_accuracy", "model_accuracy")
    ]
    return NominalHead(
        weights.reshape(k, n_in), biases, classes, n, c, cv, f1, inputs, power, *accuracies
    )


# -- fitting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NominalFit:
    head: NominalHead
    loo_labels: list[int]  # per fitted item, its out-of-fold value index


def fit_nominal(
    dim: Dimension,
    hidden: np.ndarray,
    probs: Sequence[Sequence[float]],
    labels: Sequence[Sequence[int]],
) -> NominalFit:
    """Fit one nominal dimension's head.

    hidden: (n, dimensions, n_embd) states per item, or (n, n_embd) features; probs: per item,
    the model's probability of each of the dimension's values; labels: per item, the value
    indices its reviewers gave (each reviewer's label is a training row; the item's rows share
    one unit of weight)."""
    import sklearn.linear_model  # noqa: F401  (loads scipy's BLAS before the limit is set)
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    # One BLAS thread: these matrices are small, and on a busy 2-core machine OpenBLAS's
    # threads waiting on each other made a 320-item fit 30 times slower (8 s against 500 s).
    # The limit covers only the BLAS libraries loaded when it is set, hence the import above.
    with threadpool_limits(1):
        return _fit_nominal(dim, hidden, probs, labels)


def _fit_nominal(
    dim: Dimension,
    hidden: np.ndarray,
    probs: Sequence[Sequence[float]],
    labels: Sequence[Sequence[int]],
) -> NominalFit:
    from annotator.agreement import alpha  # krippendorff, imported only when fitting

    domain = [float(i) for i in range(len(dim.values))]
    majority = [_majority(v) for v in labels]
    folds = _folds(majority)
    truth = np.asarray(majority)
    # The model's own answer (argmax; ties to the lower index, as the readout breaks them).
    answer = np.argmax(np.asarray(probs, dtype=np.float64), axis=1)
    floor = float(np.mean(answer == truth))
    answer_f1 = macro_f1(majority, answer.tolist())
    best: tuple | None = None
    for inputs in INPUTS:
        if inputs == "states":
            x = np.stack([features(h) for h in hidden])
        else:
            x = np.stack([log_probs(p) for p in probs])
        mean_x = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale == 0] = 1.0
        z = (x - mean_x) / scale
        for power in POWERS:
            for c in C_GRID:
                predicted = list(majority)
                for k in range(FOLDS):
                    train, held = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
                    seen = {v for i in train for v in labels[i]}
                    if len(held) == 0:
                        continue
                    if len(seen) < 2:  # every other item has one value: all it knows
                        guesses = [next(iter(seen))] * len(held)
                    else:
                        model = _fit(z[train], [labels[i] for i in train], c, power)
                        guesses = model.predict(z[held])
                    for i, p in zip(held, guesses, strict=True):
                        predicted[i] = int(p)
                score = alpha(np.array([predicted, majority], dtype=float), "nominal", domain)
                score = -math.inf if score is None else score
                accuracy = float(np.mean(np.asarray(predicted) == truth))
                improves = accuracy >= floor - 1e-9 and macro_f1(majority, predicted) > answer_f1
                key = (float(improves), score)
                if best is None or _better(key, best[0]):
                    best = (key, score, inputs, power, c, predicted, z, mean_x, scale, accuracy)
    assert best is not None
    _, cv_alpha, inputs, power, c, predicted, z, mean_x, scale, accuracy = best
    model = _fit(z, labels, c, power)
    coef = np.asarray(model.coef_, dtype=np.float64)
    classes = tuple(int(v) for v in model.classes_)
    if len(classes) == 2:  # scikit-learn keeps one row for two classes: logits (-w/2, w/2)
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-model.intercept_[0] / 2, model.intercept_[0] / 2])
    else:
        intercept = np.asarray(model.intercept_, dtype=np.float64)
    # The same model on raw (float16-rounded) states: W z + b = (W / scale) x + b - W mean/scale.
    weights = (coef / scale).astype(np.float32)
    biases = tuple(float(b) for b in intercept - coef @ (mean_x / scale))
    head = NominalHead(
        weights,
        biases,
        classes,
        len(labels),
        c,
        None if not math.isfinite(cv_alpha) else round(cv_alpha, 6),
        round(macro_f1(majority, predicted), 6),
        inputs,
        power,
        round(accuracy, 6),
        round(floor, 6),
    )
    return NominalFit(head, predicted)


def _better(key: tuple, than: tuple) -> bool:
    """Whether a setting's (improves on the model's answer, alpha) beats the best so far;
    figures within 1e-12 count as equal (the first setting tried keeps the tie)."""
    for a, b in zip(key, than, strict=True):
        if abs(float(a) - float(b)) > 1e-12:
            return float(a) > float(b)
    return False


def _fit(z: np.ndarray, labels: Sequence[Sequence[int]], c: float, power: float):
    """LogisticRegression (multinomial, L2) on one row per given label, weighted so each item
    counts once and, with power 1, each value's items together weigh as much as any other
    value's."""
    from sklearn.linear_model import LogisticRegression

    rows, y, weight = [], [], []
    for i, given in enumerate(labels):
        for v in given:
            rows.append(i)
            y.append(v)
            weight.append(1.0 / len(given))
    w = np.asarray(weight)
    y_arr = np.asarray(y)
    totals = {v: w[y_arr == v].sum() for v in set(y)}
    w = w * np.array([(w.sum() / (len(totals) * totals[v])) ** power for v in y])
    model = LogisticRegression(C=c, max_iter=500, tol=1e-4)
    model.fit(z[rows], y_arr, sample_weight=w)
    return model


def _majority(given: Sequence[int]) -> int:
    """The most given value (ties: the lower index, as the argmax rule breaks them)."""
    counts = np.bincount(np.asarray(given, dtype=np.int64))
    return int(np.argmax(counts))


def _folds(majority: Sequence[int]) -> np.ndarray:
    """A fold per item: round-robin within each value, in item order (deterministic)."""
    folds = np.zeros(len(majority), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, v in enumerate(majority):
        folds[i] = seen.get(v, 0) % FOLDS
        seen[v] = seen.get(v, 0) + 1
    return folds


def macro_f1(truth: Sequence[int], predicted: Sequence[int]) -> float:
    """F1 per value among the values in `truth`, averaged (a value never predicted: F1 0)."""
    from sklearn.metrics import f1_score  # scikit-learn is loaded anyway when fitting

    values = sorted(set(truth))
    if not values:
        return math.nan
    return float(f1_score(truth, predicted, labels=values, average="macro", zero_division=0))
