"""Nominal heads (annotator/calibration/nominal.py): fitting, rare values, the JSON a file carries."""

import functools
import json

import numpy as np
import pytest
from test_calibration import RUBRIC, _set, tiny_model_file

from annotator.calibration.heads import Head, head_from_json
from annotator.calibration.nominal import NominalHead, fit_nominal, macro_f1
from annotator.errors import AnnotatorError
from annotator.rubric import Dimension

DIM = Dimension("kind", "?", "nominal", ("a", "b", "c", "d", "e", "f"))
FLAT = [1.0 / 6] * 6
SHARES = [0.55, 0.25, 0.1, 0.06, 0.04, 0.0]  # "f" is never given


@pytest.fixture(autouse=True)
def small_grid(monkeypatch):
    """Two L2 strengths and full class balance: the search's breadth is not what these
    tests check, and each point of it is 5 fits (bench/nominal_quality.py runs the full one)."""
    import annotator.calibration.nominal as nominal

    monkeypatch.setattr(nominal, "C_GRID", (0.1, 1.0))
    monkeypatch.setattr(nominal, "POWERS", (1.0,))


def flat(n: int, values: int = 6) -> list[list[float]]:
    """The model's probabilities when it knows nothing: the head must read the states."""
    return [[1.0 / values] * values] * n


def synthetic(n: int, seed: int = 0, signal: float = 1.2):
    """States where each value shifts its own coordinates (with noise); rare values rare."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(6, size=n, p=SHARES)
    states = rng.normal(0, 1, size=(n, 2, 32)).astype(np.float32)  # two decision points
    for v in range(6):
        states[labels == v, :, 4 * v : 4 * v + 4] += signal
    return states, labels


def test_a_nominal_head_chooses_rare_values_and_reports_out_of_fold_figures():
    states, labels = synthetic(400)
    fit = fit_nominal(DIM, states, flat(len(labels)), [[int(v)] for v in labels])
    head = fit.head
    assert head.classes == (0, 1, 2, 3, 4)  # "f" was never given: it cannot be chosen
    assert head.c in (0.1, 1.0) and head.n == 400 and head.power == 1.0
    # Out-of-fold labels: every value that was given is chosen, rare ones included.
    assert set(fit.loo_labels) == {0, 1, 2, 3, 4}
    assert head.cv_macro_f1 == pytest.approx(macro_f1(list(labels), fit.loo_labels), abs=1e-6)
    assert head.cv_alpha is not None and head.cv_alpha > 0.5
    # New items: the rare values are found (class balance), not drowned by "a".
    new_states, new_labels = synthetic(600, seed=1)
    chosen = np.array([head.choose(s, FLAT)[0] for s in new_states])
    for rare in (3, 4):
        recall = np.mean(chosen[new_labels == rare] == rare)
        assert recall > 0.5, (rare, recall)
    assert macro_f1(list(new_labels), list(chosen)) > 0.6
    margins = [head.choose(s, FLAT)[1] for s in new_states[:20]]
    assert all(0.0 <= m <= 1.0 for m in margins) and len(set(margins)) > 1


def test_two_reviewers_and_two_values():
    """Two values only (scikit-learn keeps one coefficient row then) and items labelled by
    two reviewers who disagree: the head still gives a probability per value."""
    rng = np.random.default_rng(4)
    states = rng.normal(size=(60, 16)).astype(np.float32)
    labels = (states[:, 0] > 0).astype(int)
    given = [[int(v)] if i % 3 else [int(v), 1 - int(v)] for i, v in enumerate(labels)]
    yes = Dimension("yes", "?", "nominal", ("no", "yes"))
    head = fit_nominal(yes, states, flat(60, 2), given).head
    assert head.weights.shape == (2, 16) and head.classes == (0, 1)
    probs = head.probabilities(states[0], [0.5, 0.5])
    assert probs.sum() == pytest.approx(1.0)
    assert head.choose(states[0], [0.5, 0.5])[0] == int(np.argmax(probs))
    assert np.mean([head.choose(s, [0.5, 0.5])[0] for s in states] == labels) > 0.75
    # The model's answer is always "no": as accurate as any head on the reviewers' majority
    # ("no" wins ties), and worthless. No head improves on it on both accuracy and macro-F1,
    # so alpha alone chooses, and the states win.
    assert head.model_accuracy == pytest.approx(np.mean([min(g) == 0 for g in given]), abs=1e-6)
    assert head.inputs == "states" and head.cv_accuracy < head.model_accuracy


def test_a_head_records_the_accuracy_it_kept_against_the_models_answer(monkeypatch):
    """A model that answers the frequent value "a" when unsure: the head improves on its
    answer on both accuracy and macro-F1 out of fold, and records both accuracies (the
    answer's is the model's argmax on the same items)."""
    import annotator.calibration.nominal as nominal

    monkeypatch.setattr(nominal, "POWERS", (1.0, 0.0))  # balance first: it must not win by order
    rng = np.random.default_rng(7)
    labels = rng.choice(6, size=300, p=SHARES)
    probs = rng.dirichlet(np.ones(6), size=300) * 0.3
    probs[:, 0] += 0.35
    probs[np.arange(300), labels] += 0.35
    answer = np.argmax(probs, axis=1)
    states = rng.normal(size=(300, 16)).astype(np.float32)
    head = fit_nominal(DIM, states, probs.tolist(), [[int(v)] for v in labels]).head
    assert head.model_accuracy == pytest.approx(np.mean(answer == labels), abs=1e-6)
    assert head.cv_accuracy >= head.model_accuracy
    assert head.cv_macro_f1 > macro_f1(list(labels), list(answer))
    again = head_from_json(Head({"kind": head}, 16, {}, 3).to_json(), "m.gguf").dims["kind"]
    assert (again.cv_accuracy, again.model_accuracy) == pytest.approx(
        (head.cv_accuracy, head.model_accuracy), abs=1e-4
    )


@functools.cache
def test_the_models_own_probabilities_are_used_where_they_cross_validate_better():
    """A fine-tuned model's answer carries the label (its states here do not): the head
    recalibrates the answer's log-probabilities, and says so."""
    rng = np.random.default_rng(5)
    labels = rng.choice(6, size=150, p=SHARES)
    probs = rng.dirichlet(np.ones(6), size=150) * 0.5
    probs[np.arange(150), labels] += 0.5
    states = rng.normal(size=(150, 16)).astype(np.float32)
    fit = fit_nominal(DIM, states, probs.tolist(), [[int(v)] for v in labels])
    assert fit.head.inputs == "probs" and fit.head.weights.shape == (5, 6)
    assert fit.head.cv_alpha is not None and fit.head.cv_alpha > 0.5
    again = head_from_json(Head({"kind": fit.head}, 16, {}, 3).to_json(), "m.gguf")
    assert again.choose(DIM, states[0], probs[0]) == fit.head.choose(states[0], probs[0])
    data = json.loads(Head({"kind": fit.head}, 16, {}, 3).to_json())
    data["dims"]["kind"]["n_values"] = 4
    with pytest.raises(AnnotatorError, match="dims.kind.n_values does not fit"):
        head_from_json(json.dumps(data), "m.gguf")


def crafted() -> tuple[Head, np.ndarray]:
    states, labels = synthetic(120)
    fit = fit_nominal(DIM, states, flat(len(labels)), [[int(v)] for v in labels])
    return Head({"kind": fit.head}, 32, {"items": 120}, 3), states


def test_nominal_head_json_round_trip_and_old_format():
    head, states = crafted()
    again = head_from_json(head.to_json(), "m.gguf")
    assert isinstance(again.dims["kind"], NominalHead) and again.sha256 == head.sha256
    for s in states[:10]:
        assert again.choose(DIM, s, FLAT) == head.choose(DIM, s, FLAT)
    summary = head.describe()["dims"]["kind"]
    assert summary["kind"] == "logistic" and summary["loo_alpha"] == head.dims["kind"].cv_alpha
    # Format 2 (ridge heads only, no per-dimension kind) still reads as ridge.
    from test_calibration import crafted_head

    old = crafted_head()
    old["format"], old["kind"] = 2, "hidden-ridge"
    del old["dims"]["quality"]["kind"]
    assert head_from_json(json.dumps(old), "m.gguf").dims["quality"].n == 60
    # A nominal head written before the accuracies were recorded reads without them.
    data = json.loads(head.to_json())
    del data["dims"]["kind"]["cv_accuracy"], data["dims"]["kind"]["model_accuracy"]
    read = head_from_json(json.dumps(data), "m.gguf").dims["kind"]
    assert read.cv_accuracy is None and read.model_accuracy is None
    assert "cv_accuracy" not in read.summary()


NOMINAL_RUBRIC = {
    **RUBRIC,
    "dimensions": [
        {"name": "kind", "question": "Which?", "scale": "nominal", "values": list("abcdef")}
    ],
}


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("dims/kind/kind", "forest", "dims.kind.kind must be 'ridge' or 'logistic'"),
        ("dims/kind/classes", [0, 1, 9], "dims.kind does not fit the rubric's values"),
        ("dims/kind/classes", [1, 0, 2, 3, 4], "dims.kind.classes must be distinct and ascending"),
        ("dims/kind/classes", [0, 1, 2, 3], "dims.kind.weights must be 4 x 32"),
        ("dims/kind/classes", [0, 1.5], "dims.kind.classes.1 must be an integer"),
        ("dims/kind/classes", 3, "dims.kind.classes must be a list"),
        ("dims/kind/biases", [0.0, 1.0], "dims.kind.biases must be a list of 5 numbers"),
        ("dims/kind/biases", [0.0, 1.0, 2.0, 3.0, 10**400], "dims.kind.biases.4 must be finite"),
        ("dims/kind/c", 0, "dims.kind.c must be above 0"),
        ("dims/kind/cv_macro_f1", 1.5, "dims.kind.cv_macro_f1 must be between 0 and 1"),
        ("dims/kind/cv_alpha", float("nan"), "dims.kind.cv_alpha must be finite"),
        ("dims/kind/weights", "AAAAAAAAAAA=", "dims.kind.weights must be 5 x 32"),
        ("dims/kind/n", -1, "dims.kind.n must be between"),
        ("dims/kind/inputs", "tokens", "dims.kind.inputs must be one of states, probs"),
        ("dims/kind/power", 2.0, "dims.kind.power must be between 0 and 1"),
        ("dims/kind/cv_accuracy", 1.5, "dims.kind.cv_accuracy must be between 0 and 1"),
        ("dims/kind/model_accuracy", "x", "dims.kind.model_accuracy must be a number"),
    ],
    ids=lambda value: repr(value)[:24],
)
def test_every_number_of_a_nominal_head_in_a_model_file_is_checked(tmp_path, where, value, message):
    from annotator.modelfile import KEY_CALIBRATION, KEY_RUBRIC, read_model_info
    from annotator.rubric import rubric_from_dict

    rubric = rubric_from_dict(NOMINAL_RUBRIC, "test")
    data = json.loads(crafted()[0].to_json())
    _set(data, where, value)
    path = tiny_model_file(
        tmp_path / "m.gguf",
        {KEY_RUBRIC: rubric.canonical_json(), KEY_CALIBRATION: json.dumps(data)},
    )
    with pytest.raises(AnnotatorError) as caught:
        read_model_info(path).head(rubric)
    text = str(caught.value)
    assert text.startswith(f"{path} [{KEY_CALIBRATION}]: calibration head ")
    assert message in text and text.isprintable() and "\n" not in text


def test_a_nominal_head_is_refused_for_an_ordinal_dimension():
    from annotator.rubric import rubric_from_dict

    data = json.loads(crafted()[0].to_json())
    data["dims"] = {"quality": data["dims"]["kind"]}
    with pytest.raises(AnnotatorError, match="dims.quality does not fit the rubric's values"):
        head_from_json(json.dumps(data), "m.gguf", rubric_from_dict(RUBRIC, "test"))
