"""`annotator import --format argilla` and `results --format argilla`, on records in the shape
of Argilla 2's `Record.to_dict` (tests/data/formats/README.md).

Projects are built through the Store directly (no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.cli import annotator

from annotator.errors import AnnotatorError
from annotator.formats import kept_fields, store_import
from annotator.formats.argilla import read_records
from annotator.project.store import Label, Store
from annotator.rubric import load_rubric

DATA = Path(__file__).parent / "data" / "formats"
RECORDS = DATA / "argilla_records.json"
RUBRIC = load_rubric(DATA / "reviews.toml")
ANA = "argilla user 0b4e5c3a-7f7b-4a4e-9f43-4a6f7c2d3b11"
BEN = "argilla user 5d2f1a9e-1c3b-4e8f-b2a7-9e0d4c6f8a22"


def imported(project: Path, source: Path = RECORDS) -> Path:
    with Store(project) as store:
        store_import(store, RUBRIC, "argilla", read_records(source, RUBRIC), source)
    return project


def contents(project: Path) -> tuple[list, list]:
    with Store(project) as store:
        items = [(i.id, i.fields) for i in store.items()]
        return items, sorted(r[:4] for r in store.reviews())


def test_records_import_as_items_and_submitted_responses_per_user(tmp_path):
    items, reviews = contents(imported(tmp_path / "p.db"))
    assert items == [
        ("r1", {"text": "Good case, Excellent value."}),
        ("r2", {"text": "What a waste of money and time!"}),
    ]
    assert reviews == [  # ben's draft on r2 gives nothing
        ("r1", "quality", ANA, 4),
        ("r1", "sentiment", ANA, "Positive"),
        ("r1", "sentiment", BEN, "Neutral"),
        ("r2", "sentiment", ANA, "Negative"),
    ]
    with Store(tmp_path / "p.db") as store:
        kept = kept_fields(store, "argilla")
    original = json.loads(RECORDS.read_text())[0]
    assert kept["r1"]["fields"] == {"title": "Great"}
    for key in ("metadata", "suggestions", "responses", "vectors", "_server_id"):
        assert kept["r1"][key] == original[key]


def _annotate(project: Path) -> None:
    with Store(project) as store:
        run_id, _ = store.find_or_start_run(
            model_path="m.gguf",
            model_sha256="ef" * 32,
            rubric=RUBRIC,
            data_path="d.jsonl",
            data_sha256="0" * 64,
            settings={},
        )
        for item in ("r1", "r2"):
            labels = {"sentiment": Label("Negative", 0.75, 0.4), "quality": Label(2, 0.5, 0.2)}
            labels["topic"] = Label("Delivery", 0.25, 0.1)
            store.save_annotation(run_id, item, labels, 5, 0, 0.01)


def test_results_are_records_with_suggestions_and_import_again(tmp_path, capsys):
    project = imported(tmp_path / "p.db")
    _annotate(project)
    out = tmp_path / "out.json"
    code, err = annotator(capsys, "results", str(project), "--format", "argilla", "--out", str(out))
    assert code == 0, err
    records = json.loads(out.read_text())
    # Record.from_dict reads id, fields, metadata, vectors, _server_id, suggestions as
    # {question: {value, score, agent}} and responses as {question: [{value, user_id}]}.
    for record in records:
        assert isinstance(record["id"], str) and isinstance(record["fields"]["text"], str)
        for question, suggestion in record["suggestions"].items():
            assert set(suggestion) == {"value", "score", "agent"}, question
        for answers in record["responses"].values():
            assert all({"value", "user_id"} <= set(a) for a in answers)
    agent = "annotator run 1 (" + "ef" * 6 + ")"
    assert records[0]["suggestions"]["sentiment"] == {
        "value": "Negative",
        "score": 0.75,
        "agent": agent,
    }
    assert records[0]["suggestions"]["quality"]["value"] == 2
    original = json.loads(RECORDS.read_text())
    assert records[0]["fields"] == original[0]["fields"]  # the kept field goes back
    assert records[1]["responses"] == original[1]["responses"]
    assert records[0]["_server_id"] == original[0]["_server_id"]
    assert contents(imported(tmp_path / "again.db", out)) == contents(project)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: r["responses"]["sentiment"][0].update(value="Mixed"),
            "record[1].responses.sentiment[0].value: 'Mixed' is not one of Positive, "
            "Negative, Neutral",
        ),
        (
            lambda r: r["responses"].update(mood=[]),
            "record[1].responses: question 'mood' is not a dimension of the rubric "
            "(sentiment, quality, topic)",
        ),
        (
            lambda r: r["fields"].pop("text"),
            "record[1].fields.text: missing (an input of the rubric)",
        ),
    ],
)
def test_a_record_that_does_not_fit_is_refused_and_nothing_stored(tmp_path, change, message):
    project = imported(tmp_path / "p.db")
    before = contents(project)
    records = json.loads(RECORDS.read_text())
    change(records[1])
    records[1]["id"] = "r9"  # a new item, which must not be stored either
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records))
    with Store(project) as store, pytest.raises(AnnotatorError) as err:
        store_import(store, RUBRIC, "argilla", read_records(bad, RUBRIC), bad)
    assert str(err.value) == f"{bad} {message}"
    assert contents(project) == before
