"""How many reviews are enough: the learning curve of the calibration head
(annotator.calibration.curve, `calibrate --curve`), on made-up projects (no model run)."""

from __future__ import annotations

import numpy as np
from conftest import run_cli
from helpers.dialogue import DIMENSIONS, RUBRIC, dialogue_project

from annotator.calibration.curve import Curve, Point, _draw, dimension_curve, groups


def test_items_sharing_an_input_text_are_one_group():
    fields = {
        "a": {"context": "c1", "response": "x", "lang": "en"},
        "b": {"context": "c1", "response": "y", "lang": "en"},
        "c": {"context": "c2", "response": "y", "lang": "en"},  # shares a response with b
        "d": {"context": "c3", "response": "z", "lang": "en"},
    }
    # lang is the same everywhere: it would make one group of everything, so it does not count.
    group = groups(fields, ["context", "response", "lang"])
    assert group["a"] == group["b"] == group["c"] != group["d"]


def test_a_draw_never_holds_out_an_item_of_a_fitted_group():
    group_of = np.repeat(np.arange(10), 6)
    rng = np.random.default_rng(0)
    for size in (5, 25, 40):
        fit, held = _draw(rng, group_of, size)
        assert len(fit) == size and len(held) >= 60 - size - 5
        assert not set(group_of[fit]) & set(group_of[held])


def _states(rows: np.ndarray) -> np.ndarray:
    return np.repeat(rows[:, None, :], 2, axis=1).astype(np.float16)


def test_grouped_held_out_items_measure_the_dimension_not_the_text():
    """Each group's items share a hidden state and a label, and nothing carries over between
    groups: a head that had seen an item's group would label it right, one that had not is
    at chance. Alpha near 0 shows held-out items came from unseen groups."""
    dim = RUBRIC.dimension("overall")
    rng = np.random.default_rng(3)
    n_groups, per = 30, 4
    group_of = np.repeat(np.arange(n_groups), per)
    label = rng.integers(0, 5, n_groups)[group_of]
    states = _states(rng.normal(size=(n_groups, 16))[group_of])
    reviews = [label.tolist(), label.tolist()]
    curve = dimension_curve(dim, states, reviews, group_of, sizes=(50, 90), repeats=10)
    assert [p.size for p in curve.points] == [50, 90]
    assert all(abs(p.alpha) < 0.3 for p in curve.points)
    # The same items with a real signal in the states: the head learns it.
    signal = states.astype(float) + 4 * label[:, None, None]
    learned = dimension_curve(dim, signal, reviews, group_of, sizes=(50, 90), repeats=10)
    assert all(p.alpha > 0.7 for p in learned.points)


def test_enough_is_where_another_50_reviews_move_alpha_less_than_its_interval():
    def curve(*points):
        return Curve("d", 300, tuple(Point(s, a, a - h, a + h, 20) for s, a, h in points))

    # 25 -> 50 moves 0.2 per 50 reviews (more than ±0.1); 50 -> 100 moves 0.02 per 50.
    assert curve((25, 0.1, 0.1), (50, 0.2, 0.08), (100, 0.24, 0.05)).enough == 50
    assert curve((25, 0.1, 0.05), (50, 0.3, 0.05), (100, 0.5, 0.04)).enough is None
    # Flat early, rising later: not enough (a first flat pair is no answer).
    assert curve((25, 0.1, 0.1), (50, 0.12, 0.1), (100, 0.4, 0.05)).enough is None
    assert curve((25, 0.1, 0.1), (50, 0.12, 0.1), (100, 0.14, 0.05)).enough == 25


def test_calibrate_curve_prints_a_line_per_dimension_and_writes_nothing(tmp_path):
    project = dialogue_project(tmp_path)
    before = project.read_bytes()
    done = run_cli("calibrate", str(project), "--curve", env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "25 items" in done.stdout and "40 items" in done.stdout  # 60 items, 20 held out
    for name, _ in DIMENSIONS:
        (row,) = [line for line in lines if line.startswith(name)]
        assert row.count("±") == 2
    assert project.read_bytes() == before
    refused = run_cli("calibrate", str(project), "--curve", "--out", str(tmp_path / "x.gguf"))
    assert refused.returncode == 2 and "--curve writes nothing" in refused.stderr
