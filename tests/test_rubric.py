import pytest

from annotator.errors import AnnotatorError
from annotator.rubric import load_rubric, rubric_from_dict, rubric_from_json

ISSUE_EXAMPLE = """
name = "newsroom"
instructions = "You will read a news article and a summary of it. Rate the summary."
[[inputs]]
column = "summary"
label = "SUMMARY"
[[inputs]]
column = "article"
label = "ARTICLE"
[[dimensions]]
name = "informativeness"
question = "How well does the summary capture the key points of the article?"
scale = "ordinal"
values = [1, 2, 3, 4, 5]
anchors = { 1 = "misses the key points", 5 = "captures all key points" }
"""


def test_issue_example_is_accepted(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(ISSUE_EXAMPLE)
    rubric = load_rubric(path)
    assert [i.column for i in rubric.inputs] == ["summary", "article"]
    dim = rubric.dimensions[0]
    assert dim.values == (1, 2, 3, 4, 5) and dim.scale == "ordinal"
    assert dict(dim.anchors) == {"1": "misses the key points", "5": "captures all key points"}


def test_hash_is_stable_across_formatting_and_changes_with_content(tmp_path):
    a = tmp_path / "a.toml"
    a.write_text(ISSUE_EXAMPLE)
    b = tmp_path / "b.toml"
    # Same rubric, other key order, spacing and anchor order.
    b.write_text(
        ISSUE_EXAMPLE.replace(
            'anchors = { 1 = "misses the key points", 5 = "captures all key points" }',
            'anchors = {5 = "captures all key points",   1 = "misses the key points"}',
        )
    )
    assert load_rubric(a).hash == load_rubric(b).hash
    c = tmp_path / "c.toml"
    c.write_text(
        ISSUE_EXAMPLE.replace("[1, 2, 3, 4, 5]", "[1, 2, 3, 4]").replace(
            ', 5 = "captures all key points"', ""
        )
    )
    assert load_rubric(c).hash != load_rubric(a).hash
    # The canonical form round-trips.
    rubric = load_rubric(a)
    assert rubric_from_json(rubric.canonical_json(), "x").hash == rubric.hash


def test_classification_is_one_nominal_dimension(goemotions_rubric):
    dim = goemotions_rubric.dimensions[0]
    assert dim.scale == "nominal" and "neutral" in dim.values and len(dim.values) == 28


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d.pop("instructions"), "instructions: missing"),
        (lambda d: d.update(colour="red"), "colour: unknown key"),
        (lambda d: d["dimensions"][0].update(scale="ratio"), "dimensions[0].scale: must be one of"),
        (
            lambda d: d["dimensions"][0].update(values=[1, "two"]),
            "dimensions[0].values: ordinal values must be integers",
        ),
        (
            lambda d: d["dimensions"][0].update(values=[1, 1, 2]),
            "dimensions[0].values: values must be unique",
        ),
        (
            lambda d: d["dimensions"][0].update(anchors={"9": "x"}),
            "dimensions[0].anchors.9: is not one of",
        ),
        (
            lambda d: d["dimensions"][0].update(name="bad name!"),
            "dimensions[0].name: must start with a letter",
        ),
        (lambda d: d["inputs"].append({"column": "summary"}), "inputs[2].column: duplicate column"),
        (lambda d: d.update(inputs=[]), "inputs: must be a non-empty list"),
        (lambda d: d["dimensions"][0].update(question=7), "dimensions[0].question: must be text"),
        (lambda d: d.update(name="x" * 5000), "name: longer than"),
    ],
)
def test_invalid_rubrics_name_file_and_key(change, expected):
    import tomllib

    data = tomllib.loads(ISSUE_EXAMPLE)
    change(data)
    with pytest.raises(AnnotatorError) as err:
        rubric_from_dict(data, source="rubric.toml")
    message = str(err.value)
    assert message.startswith("rubric.toml: invalid rubric: ")
    assert expected in message
    assert "\n" not in message


def test_every_problem_is_reported_at_once():
    with pytest.raises(AnnotatorError) as err:
        rubric_from_dict({"name": 3, "inputs": "x", "dimensions": []}, source="r.toml")
    message = str(err.value)
    for key in ("name:", "instructions:", "inputs:", "dimensions:"):
        assert key in message


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(AnnotatorError, match="missing.toml: cannot read rubric"):
        load_rubric(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    with pytest.raises(AnnotatorError, match="bad.toml: invalid TOML"):
        load_rubric(bad)


def test_parse_value():
    import tomllib

    rubric = rubric_from_dict(tomllib.loads(ISSUE_EXAMPLE), "r")
    dim = rubric.dimensions[0]
    assert dim.parse_value("3") == 3 and dim.parse_value(" 4.0 ") == 4
    for bad in ("6", "x", "3.5", True):
        with pytest.raises(ValueError):
            dim.parse_value(bad)


def test_untrusted_key_names_are_printed_without_terminal_escapes():
    with pytest.raises(AnnotatorError) as err:
        rubric_from_dict({"\x1b]0;pwned\x07": 1}, source="model.gguf [annotator.rubric]")
    assert "\x1b" not in str(err.value) and "\x07" not in str(err.value)
    assert "?]0;pwned?: unknown key" in str(err.value)


def test_numbers_of_any_size_give_one_line_naming_the_source(tmp_path):
    """Python refuses to convert an integer of more than 4300 digits: a rubric holding one (in
    a model file's metadata, the project store or a TOML file) is one line, no traceback."""
    import tomllib

    data = tomllib.loads(ISSUE_EXAMPLE)
    text = (
        rubric_from_dict(data, "r")
        .canonical_json()
        .replace("[1,2,3,4,5]", "[1,2,3,4," + "5" * 5000 + "]")
    )
    with pytest.raises(AnnotatorError) as err:
        rubric_from_json(text, "m.gguf [annotator.rubric]")
    assert str(err.value) == (
        "m.gguf [annotator.rubric]: rubric: holds a number of 5000 digits (at most 4300 are read)"
    )
    path = tmp_path / "r.toml"
    path.write_text(ISSUE_EXAMPLE.replace("[1, 2, 3, 4, 5]", "[1, 2, 3, 4, " + "5" * 5000 + "]"))
    with pytest.raises(AnnotatorError) as err:
        load_rubric(path)
    assert str(err.value) == f"{path}: invalid TOML (holds a number of more than 4300 digits)"


@pytest.mark.parametrize(
    "names, values, expected",
    [
        (
            ["truncated"],
            [1, 2],
            "dimensions[0].name: 'truncated' is a column of `results`; rename the dimension",
        ),
        (
            ["x", "x_p"],
            [1, 2],
            "dimensions[1].name: 'x_p' and dimension 'x' would both write "
            "results column 'x_p'; rename one",
        ),
        (
            ["x_margin", "x"],
            [1, 2],
            "dimensions[1].name: 'x' and dimension 'x_margin' would both "
            "write results column 'x_margin'; rename one",
        ),
        (
            ["x", "x_p_2"],
            [1, 2],
            "dimensions[1].name: 'x_p_2' and dimension 'x' would both write "
            "results column 'x_p_2'; rename one",
        ),
    ],
)
def test_dimension_names_that_would_overwrite_results_columns_are_refused(names, values, expected):
    import tomllib

    data = tomllib.loads(ISSUE_EXAMPLE)
    data["dimensions"] = [
        {**data["dimensions"][0], "name": n, "values": values, "anchors": {}} for n in names
    ]
    with pytest.raises(AnnotatorError) as err:
        rubric_from_dict(data, source="rubric.toml")
    assert str(err.value) == f"rubric.toml: invalid rubric: {expected}"


def test_results_columns_are_unique_for_any_accepted_rubric():
    from annotator.project.results import columns

    data = {
        "name": "n",
        "instructions": "i",
        "inputs": [{"column": "text"}],
        "dimensions": [
            {"name": "x", "question": "q", "scale": "nominal", "values": ["a", "p", "margin"]},
            {"name": "xp", "question": "q", "scale": "ordinal", "values": [1, 2]},
            {"name": "x_pa", "question": "q", "scale": "ordinal", "values": [1, 2]},
        ],
    }
    rubric = rubric_from_dict(data, "r")
    for with_probs in (False, True):
        cols = columns(rubric, with_probs)
        assert len(cols) == len(set(cols))
