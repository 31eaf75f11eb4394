"""Agreement against Krippendorff's published example (Krippendorff 2011, "Computing
Krippendorff's Alpha-Reliability", 4 coders x 12 units with missing values):
nominal 0.743, ordinal 0.815, interval 0.849."""

import json
import math

import pytest
from conftest import run_cli

from annotator.agreement import agreement
from annotator.data import Item
from annotator.project.store import Label, Store
from annotator.rubric import rubric_from_dict

N = None
PUBLISHED = {  # coder -> values for units 1..12
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
    "C": [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
}
EXPECTED = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849}

RUBRIC = rubric_from_dict(
    {
        "name": "k",
        "instructions": "x",
        "inputs": [{"column": "text"}],
        "dimensions": [
            {
                "name": "nom",
                "question": "?",
                "scale": "nominal",
                "values": ["1", "2", "3", "4", "5"],
            },
            {"name": "ord", "question": "?", "scale": "ordinal", "values": [1, 2, 3, 4, 5]},
            {"name": "itv", "question": "?", "scale": "interval", "values": [1, 2, 3, 4, 5]},
        ],
    },
    "k",
)


def as_value(dim, v):
    return str(v) if dim.scale == "nominal" else v


@pytest.mark.parametrize("dim", RUBRIC.dimensions, ids=lambda d: d.scale)
def test_published_values_directly(dim):
    table = [[None if v is None else as_value(dim, v) for v in row] for row in PUBLISHED.values()]
    result = agreement(dim, list(PUBLISHED), table, bootstrap=200)
    assert result.alpha == pytest.approx(EXPECTED[dim.scale], abs=5e-4)
    assert result.n == 12 - 1  # unit 12 has a single value: not pairable
    assert result.low < result.alpha < result.high


@pytest.fixture
def published_project(tmp_path):
    """Coder A as the model's run, B, C and D as imported reviewers."""
    path = tmp_path / "k.db"
    with Store(path) as store:
        store.bind_rubric(RUBRIC)
        store.add_items([Item(f"u{n}", n, {"text": f"unit {n}"}) for n in range(1, 13)])
        run_id, _ = store.find_or_start_run(
            model_path="m.gguf",
            model_sha256="0" * 64,
            rubric=RUBRIC,
            data_path="d.csv",
            data_sha256="0",
            settings={},
        )
        for n, v in enumerate(PUBLISHED["A"], start=1):
            if v is not None:
                labels = {d.name: Label(as_value(d, v), 0.9, 0.5) for d in RUBRIC.dimensions}
                store.save_annotation(run_id, f"u{n}", labels, 10, 0, 0.1)
        for coder in "BCD":
            rows = [
                (f"u{n}", d.name, as_value(d, v))
                for n, v in enumerate(PUBLISHED[coder], start=1)
                if v is not None
                for d in RUBRIC.dimensions
            ]
            store.save_reviews(coder, "import", rows)
    return path


def test_annotator_agree_reproduces_published_values(published_project):
    done = run_cli("agree", str(published_project), "--json", "--bootstrap", "200")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["reviewers"] == ["B", "C", "D"]
    for dim in report["dimensions"]:
        everyone = next(c for c in dim["comparisons"] if c["coders"] == ["model", "B", "C", "D"])
        assert everyone["alpha"] == pytest.approx(EXPECTED[dim["level"]], abs=5e-4)
        low, high = everyone["ci95"]
        assert low < everyone["alpha"] < high
        pairs = [c for c in dim["comparisons"] if len(c["coders"]) == 2]
        assert [c["coders"] for c in pairs] == [["model", "B"], ["model", "C"], ["model", "D"]]
        assert all(c["n"] >= 8 for c in pairs)


def test_agree_one_reviewer_and_table(published_project):
    done = run_cli(
        "agree", str(published_project), "--reviewer", "D", "--bootstrap", "50", "--pairs"
    )
    assert done.returncode == 0, done.stderr
    assert "model vs D" in done.stdout and "95% CI" in done.stdout
    missing = run_cli("agree", str(published_project), "--reviewer", "Z")
    assert missing.returncode == 1 and "no reviews by 'Z'" in missing.stderr


def test_undefined_alpha_is_reported_not_invented():
    dim = RUBRIC.dimensions[1]
    same = agreement(dim, ["model", "r"], [[3, 3, 3], [3, 3, 3]])
    assert same.alpha is None and "identical" in same.note
    few = agreement(dim, ["model", "r"], [[1], [2]])
    assert few.alpha is None and few.n == 1
    assert not math.isnan(agreement(dim, ["m", "r"], [[1, 2, 3, 4], [1, 2, 3, 5]]).alpha)
