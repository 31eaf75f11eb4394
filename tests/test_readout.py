"""Decision rules and priors (annotator/readout.py)."""

import pytest

from annotator.calibration.readout import Readout, apply_prior, decide, rule_for
from annotator.errors import AnnotatorError
from annotator.rubric import Dimension

ORDINAL = Dimension("q", "?", "ordinal", (1, 2, 3, 4, 5))
INTERVAL = Dimension("s", "?", "interval", (0, 10, 20))
NOMINAL = Dimension("t", "?", "nominal", ("a", "b", "c"))


def test_argmax_picks_the_mode_and_its_lead():
    assert decide([0.1, 0.5, 0.4], "argmax") == (1, pytest.approx(0.1))
    assert decide([0.5, 0.5], "argmax") == (0, 0.0)  # exact tie: the first value


def test_median_differs_from_the_mode_on_a_skewed_distribution():
    probs = [0.4, 0.0, 0.05, 0.3, 0.25]  # mode 1, median 4
    assert decide(probs, "argmax")[0] == 0
    index, margin = decide(probs, "median")
    assert index == 3
    # cumulative 0.45 before the 4th value, 0.75 after it: 0.5 is 0.05 from the nearer edge
    assert margin == pytest.approx(0.1)
    assert decide([0.1, 0.8, 0.1], "median") == (1, pytest.approx(0.8))


def test_mean_rounds_the_expected_position():
    assert decide([0.5, 0.0, 0.5], "mean") == (1, pytest.approx(1.0))
    index, margin = decide([0.3, 0.0, 0.7], "mean")  # mean position 1.4
    assert index == 1 and margin == pytest.approx(0.2)


def test_scale_picks_the_rule():
    assert rule_for(ORDINAL, "auto") == "median"
    assert rule_for(INTERVAL, "auto") == "mean"
    assert rule_for(NOMINAL, "auto") == rule_for(NOMINAL, "mean") == "argmax"


def test_a_prior_is_divided_out():
    assert apply_prior([0.6, 0.4], [0.75, 0.25]) == pytest.approx([1 / 3, 2 / 3])
    readout = Readout(
        rule="argmax", prior="content-free", priors={"q": (0.9, 0.05, 0.02, 0.02, 0.01)}
    )
    assert readout.choose(ORDINAL, [0.5, 0.2, 0.1, 0.1, 0.1])[0] == 4


def test_unknown_rule_or_missing_prior_is_an_error():
    with pytest.raises(AnnotatorError, match="unknown decision rule"):
        Readout(rule="mode")
    with pytest.raises(AnnotatorError, match="no distribution for 'q'"):
        Readout(prior="batch").choose(ORDINAL, [0.2] * 5)
