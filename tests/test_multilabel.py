"""Multi-label dimensions (`kind = "multi"`): the rubric, the per-value view the model sees, the
engine's per-value yes/no decisions on the real Gemma 3 270M GGUF, and the set they collapse to."""

import pytest
from conftest import SAMPLES

from annotator import multilabel
from annotator.data import read_items
from annotator.errors import AnnotatorError
from annotator.inference import prompt
from annotator.inference.backend import EngineSettings
from annotator.inference.engine import Engine
from annotator.rubric import rubric_from_dict, rubric_from_json

EMOTIONS = ["joy", "anger", "sadness", "neutral"]


def rubric_data(**dim):
    return {
        "name": "emo",
        "instructions": "Read the comment.",
        "inputs": [{"column": "text", "label": "COMMENT"}],
        "dimensions": [
            {
                "name": "emotions",
                "question": "Which emotions does it express?",
                "kind": "multi",
                "values": EMOTIONS,
                **dim,
            },
            {"name": "toxic", "question": "Toxic?", "scale": "nominal", "values": ["no", "yes"]},
        ],
    }


RUBRIC = rubric_from_dict(rubric_data(min=1, max=2), "test")


def test_multi_dimension_is_read_and_round_trips():
    dim = RUBRIC.dimensions[0]
    assert dim.multi and dim.scale == "nominal" and (dim.min_count, dim.max_count) == (1, 2)
    again = rubric_from_json(RUBRIC.canonical_json(), "store")
    assert again == RUBRIC and again.hash == RUBRIC.hash
    # A rubric without multi-label dimensions keeps its hash (no new keys written).
    assert "kind" not in rubric_from_json(RUBRIC.canonical_json(), "x").to_dict()["dimensions"][1]


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"kind": "many"}, "dimensions[0].kind: must be one of single, multi"),
        (
            {"scale": "ordinal", "values": [1, 2]},
            "a multi-label dimension (kind = multi) is nominal",
        ),
        ({"min": 5}, "dimensions[0].min: must be a whole number from 0 to 4"),
        ({"max": True}, "dimensions[0].max: must be a whole number from 0 to 4"),
        ({"min": 2, "max": 1}, "dimensions[0].max: must not be less than min (2)"),
        ({"max": 0}, "dimensions[0].max: must be at least 1"),
        ({"values": ["a;b", "c"]}, "must not contain ';'"),
    ],
)
def test_invalid_multi_dimensions_give_one_line_naming_the_key(change, expected):
    with pytest.raises(AnnotatorError) as err:
        rubric_from_dict(rubric_data(**change), "r.toml")
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("r.toml: invalid rubric")


def test_min_and_max_belong_to_multi_dimensions_only():
    data = rubric_data()
    data["dimensions"][1]["max"] = 1
    with pytest.raises(AnnotatorError, match=r"dimensions\[1\].max: only a multi-label"):
        rubric_from_dict(data, "r.toml")


def test_parse_value_takes_lists_and_semicolon_cells_in_rubric_order():
    dim = RUBRIC.dimensions[0]
    assert dim.parse_value("sadness; joy") == ("joy", "sadness")
    assert dim.parse_value(["anger"]) == ("anger",)
    for bad in ("", "joy;anger;sadness", "joy;fear", "joy;joy", 3):
        with pytest.raises(ValueError):
            dim.parse_value(bad)
    free = rubric_from_dict(rubric_data(), "t").dimensions[0]
    assert free.parse_value("") == () and free.parse_value([]) == ()


def test_expand_gives_a_yes_no_dimension_per_value_and_one_prefix_line():
    model = multilabel.expand(RUBRIC)
    assert [d.name for d in model.dimensions] == [
        "emotions.joy", "emotions.anger", "emotions.sadness", "emotions.neutral", "toxic",
    ]  # fmt: skip
    assert all(d.values == ("no", "yes") for d in model.dimensions[:4])
    text = prompt.render_prefix(model)
    assert text.count("Which emotions does it express?") == 1
    assert "Answer yes or no for each of: joy, anger, sadness, neutral" in text
    assert multilabel.expand(model) == model  # nothing left to expand


def p_yes(values):
    return {f"emotions.{v}": [1 - p, p] for v, p in zip(EMOTIONS, values, strict=True)}


def test_collapse_keeps_min_and_max():
    labels = {f"emotions.{v}": ("no", 0.9, 0.4) for v in EMOTIONS}
    probs = p_yes([0.1, 0.3, 0.2, 0.05])
    labels["toxic"] = ("no", 0.8, 0.6)
    out = multilabel.collapse(RUBRIC, labels, probs)
    assert out["emotions"][0] == ("anger",)  # min 1: the most probable value is added
    assert out["emotions"][1] == pytest.approx(0.9 * 0.3 * 0.8 * 0.95)
    assert out["toxic"] == ("no", 0.8, 0.6)
    labels.update({f"emotions.{v}": ("yes", 0.9, 0.4) for v in EMOTIONS})
    probs = p_yes([0.9, 0.6, 0.95, 0.7])
    assert multilabel.collapse(RUBRIC, labels, probs)["emotions"][0] == ("joy", "sadness")


def test_people_values_become_per_value_answers():
    assert multilabel.as_answers(RUBRIC, {"emotions": "joy;neutral", "toxic": "no"}) == {
        "emotions.joy": "yes", "emotions.anger": "no", "emotions.sadness": "no",
        "emotions.neutral": "yes", "toxic": "no",
    }  # fmt: skip
    rows = multilabel.review_rows(RUBRIC, [("i1", "emotions", "ann", ["anger"], "audit")])
    assert ("i1", "emotions.anger", "ann", "yes", "audit") in rows and len(rows) == 4


def test_engine_decides_each_value_from_the_real_model(default_model):
    _, items, _ = read_items(SAMPLES / "goemotions" / "items.csv", ["text"])
    engine = Engine(default_model, RUBRIC, EngineSettings(n_ctx=1024, read_hidden=True))
    try:
        results = [engine.annotate(item.fields) for item in items[:2]]
        again = engine.annotate(items[0].fields)
    finally:
        engine.close()
    for result in results:
        assert list(result.decisions) == [d.name for d in engine.rubric.dimensions]
        assert result.hidden is not None and result.hidden.shape[0] == 5
        for v in EMOTIONS:
            d = result.decisions[f"emotions.{v}"]
            assert d.value in ("no", "yes") and sum(d.probs) == pytest.approx(1.0)
        labels = {k: (d.value, d.prob, d.margin) for k, d in result.decisions.items()}
        chosen = multilabel.collapse(RUBRIC, labels, result.stored_probs())["emotions"][0]
        assert 1 <= len(chosen) <= 2 and set(chosen) <= set(EMOTIONS)
    assert again.decisions == results[0].decisions  # deterministic


def _alpha_by_hand(units, dist):
    """Krippendorff's alpha from its definition (Krippendorff 2011, "Computing Krippendorff's
    alpha-reliability"): 1 - D_o / D_e over the pairable values, written independently."""
    units = [[v for v in u if v is not None] for u in units]
    units = [u for u in units if len(u) >= 2]
    n = sum(len(u) for u in units)
    d_o = sum(
        sum(dist(a, b) for i, a in enumerate(u) for j, b in enumerate(u) if i != j) / (len(u) - 1)
        for u in units
    )
    pooled = [v for u in units for v in u]
    d_e = sum(dist(a, b) for i, a in enumerate(pooled) for j, b in enumerate(pooled) if i != j)
    return 1 - (d_o / n) / (d_e / (n * (n - 1)))


def _masi(a, b):
    a, b = set(a), set(b)
    if not a | b:
        return 0.0
    mono = 1 if a == b else 2 / 3 if a <= b or b <= a else 1 / 3 if a & b else 0
    return 1 - len(a & b) / len(a | b) * mono


def test_set_alpha_matches_the_definition_with_masi():
    from annotator.agreement import agreement, jaccard_distance

    dim = RUBRIC.dimensions[0]
    table = [
        [("joy",), ("anger", "sadness"), ("neutral",), ("joy", "sadness"), None, ("anger",)],
        [("joy",), ("anger",), ("neutral",), ("sadness",), ("joy",), ("anger", "sadness")],
        [("joy", "anger"), ("anger",), None, ("sadness",), ("joy",), ("anger",)],
    ]
    got = agreement(dim, ["a", "b", "c"], table, bootstrap=50)
    want = _alpha_by_hand(list(zip(*table, strict=True)), _masi)
    assert got.level == "masi" and got.n == 6
    assert got.alpha == pytest.approx(want, abs=1e-9)
    assert got.low is not None and got.low <= got.alpha <= got.high
    # Singletons only: MASI alpha is nominal alpha.
    single = [[(v,) for v in row] for row in (["joy", "anger", "joy"], ["joy", "anger", "anger"])]
    nominal = rubric_from_dict(rubric_data(), "t").dimensions[1]
    plain = agreement(nominal, ["a", "b"], [["no", "yes", "no"], ["no", "yes", "yes"]], 0)
    assert agreement(dim, ["a", "b"], single, 0).alpha == pytest.approx(plain.alpha)
    # Jaccard distance on masks: {joy} vs {joy, anger} = 1/2; empty vs empty = 0.
    import numpy as np

    assert jaccard_distance(np.array([1.0, 0.0]), np.array([3.0, 0.0])).tolist() == [0.5, 0.0]


def test_the_model_view_records_the_rubric_it_came_from():
    model = multilabel.expand(RUBRIC)
    assert model.hash == RUBRIC.hash and model.canonical_json() == RUBRIC.canonical_json()
    assert rubric_from_json(model.canonical_json(), "gguf") == RUBRIC
