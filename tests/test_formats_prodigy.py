"""`annotator import --format prodigy` and `results --format prodigy`, on files in the shape
of Prodigy's documented tasks and `db-out` lines (tests/data/formats/README.md).

Projects are built through the Store directly (no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.cli import annotator

from annotator.errors import AnnotatorError
from annotator.formats import kept_fields, store_import
from annotator.formats.prodigy import read_lines
from annotator.formats.results import write_results_as
from annotator.project.store import Label, Store
from annotator.rubric import load_rubric

DATA = Path(__file__).parent / "data" / "formats"
TEXTCAT = DATA / "prodigy_textcat.jsonl"
CHOICE = DATA / "prodigy_choice.jsonl"
RUBRIC = load_rubric(DATA / "reviews.toml")
TEXTS = {
    "r1": "Good case, Excellent value.",
    "r2": "What a waste of money and time!",
    "r3": "The goose neck needs a little coaxing",
}


def imported(project: Path, source: Path) -> Path:
    with Store(project) as store:
        store_import(store, RUBRIC, "prodigy", read_lines(source, RUBRIC, "sentiment"), source)
    return project


def contents(project: Path) -> tuple[list, list]:
    with Store(project) as store:
        items = [(i.id, i.fields) for i in store.items()]
        return items, sorted(r[:4] for r in store.reviews())


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_textcat_answers_import_per_annotator_and_a_reject_gives_no_label(tmp_path):
    items, reviews = contents(imported(tmp_path / "p.db", TEXTCAT))
    assert items == [(i, {"text": t}) for i, t in TEXTS.items()]  # r1 twice: one item
    assert reviews == [
        ("r1", "sentiment", "reviews-alex", "Positive"),
        ("r1", "sentiment", "reviews-sam", "Positive"),
        ("r2", "sentiment", "reviews-alex", "Negative"),
    ]


def test_choice_answers_import_the_option_ids_and_an_ignore_gives_no_label(tmp_path):
    _, reviews = contents(imported(tmp_path / "p.db", CHOICE))
    assert reviews == [
        ("r1", "sentiment", "reviews-alex", "Positive"),
        ("r2", "sentiment", "reviews-alex", "Neutral"),
    ]


def test_a_choice_accepted_with_no_option_chosen_gives_no_label(tmp_path):
    records = lines(CHOICE)
    records[0]["accept"] = []
    source = tmp_path / "none.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    _, reviews = contents(imported(tmp_path / "p.db", source))
    assert reviews == [("r2", "sentiment", "reviews-alex", "Neutral")]


def test_every_line_s_other_fields_are_kept(tmp_path):
    with Store(imported(tmp_path / "p.db", TEXTCAT)) as store:
        kept = kept_fields(store, "prodigy")
    first, *_, fourth = lines(TEXTCAT)
    assert kept["r1"]["lines"] == [
        {k: v for k, v in first.items() if k != "text"},
        {k: v for k, v in fourth.items() if k != "text"},
    ]
    assert kept["r3"]["lines"][0]["answer"] == "reject"


def test_a_second_file_adds_its_lines_to_what_was_kept(tmp_path):
    project = imported(tmp_path / "p.db", TEXTCAT)
    imported(project, CHOICE)
    imported(project, CHOICE)  # the same file again adds nothing
    with Store(project) as store:
        kept = kept_fields(store, "prodigy")
    assert [line["_view_id"] for line in kept["r1"]["lines"] if "_view_id" in line] == ["choice"]
    assert len(kept["r1"]["lines"]) == 3 and len(kept["r3"]["lines"]) == 2
    assert kept["r1"]["lines"][0] == {k: v for k, v in lines(TEXTCAT)[0].items() if k != "text"}


def test_a_rubric_of_several_dimensions_needs_one_named():
    with pytest.raises(AnnotatorError) as err:
        read_lines(TEXTCAT, RUBRIC)
    assert str(err.value) == (
        "a Prodigy line labels one dimension and the rubric has 3: name one with --dimension"
    )


def _annotate(project: Path) -> None:
    with Store(project) as store:
        run_id, _ = store.find_or_start_run(
            model_path="m.gguf",
            model_sha256="cd" * 32,
            rubric=RUBRIC,
            data_path="d.jsonl",
            data_sha256="0" * 64,
            settings={},
        )
        for item, s in zip(TEXTS, ("Positive", "Negative", "Neutral"), strict=True):
            labels = {"sentiment": Label(s, 0.8, 0.4), "quality": Label(3, 0.6, 0.2)}
            labels["topic"] = Label("Price", 0.7, 0.3)
            store.save_annotation(run_id, item, labels, 5, 0, 0.01)


def test_results_are_choice_tasks_in_the_documented_shape_and_import_again(tmp_path):
    project = imported(tmp_path / "p.db", TEXTCAT)
    _annotate(project)
    out = tmp_path / "out.jsonl"
    with Store(project) as store:
        assert write_results_as(store, RUBRIC, store.run(), "prodigy", out, "sentiment") == 3
    written = lines(out)
    # Prodigy's choice interface (docs/api-interfaces): `text`, `options` as {id, text}, and
    # `accept` holding ids of those options (pre-selected); `meta` is shown with the task.
    for line, (item_id, text) in zip(written, TEXTS.items(), strict=True):
        assert line["text"] == text
        assert line["options"] == [
            {"id": v, "text": v} for v in ("Positive", "Negative", "Neutral")
        ]
        assert len(line["accept"]) == 1 and line["accept"][0] in {o["id"] for o in line["options"]}
        assert line["meta"]["id"] == item_id and line["meta"]["score"] == 0.8
        # One annotator's answer is not the model's: not written back.
        assert not {"answer", "label", "_annotator_id", "_session_id", "_task_hash"} & set(line)
    assert [line["accept"] for line in written] == [["Positive"], ["Negative"], ["Neutral"]]
    first = lines(TEXTCAT)[0]
    assert written[0]["meta"]["source"] == "amazon"  # kept fields go back
    assert written[0]["_input_hash"] == first["_input_hash"]
    assert written[0]["spans"] == [] and written[0]["priority"] == first["priority"]
    # Read again by our own importer: the same items, and no reviews (nothing is answered).
    again = imported(tmp_path / "again.db", out)
    assert contents(again) == (contents(project)[0], [])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": "Mixed"}, "line 2.label: 'Mixed' is not one of Positive, Negative, Neutral"),
        ({"answer": "maybe"}, "line 2.answer: 'maybe' is not one of accept, reject, ignore"),
        ({"text": None}, "line 2.text: must be text, not NoneType"),
        (
            {"meta": {}, "_input_hash": None},
            "line 2.meta.id: missing, and no _input_hash to identify the item",
        ),
        (
            {"_annotator_id": None, "_session_id": None},
            "line 2._annotator_id: missing (who answered)",
        ),
    ],
)
def test_a_line_that_does_not_fit_is_refused_naming_line_and_field(tmp_path, change, message):
    records = lines(TEXTCAT)
    records[1].update(change)
    records[1] = {k: v for k, v in records[1].items() if v is not None or k in ("text",)}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(AnnotatorError) as err:
        read_lines(bad, RUBRIC, "sentiment")
    assert str(err.value) == f"{bad} {message}"


def test_a_refused_file_stores_nothing_and_the_commands_work(tmp_path, capsys):
    project = tmp_path / "p.db"
    rubric = str(DATA / "reviews.toml")
    args = ("--format", "prodigy", "--rubric", rubric, "--dimension", "sentiment")
    code, err = annotator(capsys, "import", str(project), str(CHOICE), *args)
    assert code == 0, err
    assert err.strip() == "imported 3 items and 2 labels from 1 reviewers"
    before = contents(project)
    records = lines(TEXTCAT)
    records[3]["accept"] = ["Positive", "Negative"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, err = annotator(capsys, "import", str(project), str(bad), *args)
    assert code == 1
    assert err.strip().splitlines() == [
        f"annotator: error: {bad} line 4.accept: one option id expected (a dimension has one value)"
    ]
    assert contents(project) == before
    _annotate(project)
    out = tmp_path / "out.jsonl"
    code, err = annotator(capsys, "results", str(project), "--format", "prodigy", "--out", str(out))
    assert code == 1 and "name one with --dimension" in err
    code, err = annotator(
        capsys, "results", str(project), "--format", "prodigy", "--out", str(out),
        "--dimension", "sentiment",
    )  # fmt: skip
    assert code == 0, err
    assert err.strip() == f"wrote 3 tasks to {out}"
    assert [line["meta"]["id"] for line in lines(out)] == ["r1", "r2", "r3"]
