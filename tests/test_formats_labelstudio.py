"""`annotator import --format labelstudio` and `results --format labelstudio`, on a file in
the shape of Label Studio's documented export (tests/data/formats/README.md).

Projects are built through the Store directly (no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.cli import annotator

from annotator.data import Item, read_items
from annotator.errors import AnnotatorError
from annotator.formats import kept_fields, store_import
from annotator.formats.labelstudio import read_tasks
from annotator.formats.results import write_results_as
from annotator.project.store import Label, Store
from annotator.rubric import load_rubric

DATA = Path(__file__).parent / "data" / "formats"
EXPORT = DATA / "labelstudio_export.json"
RUBRIC = load_rubric(DATA / "reviews.toml")
USER_10, USER_11 = "labelstudio user 10", "labelstudio user 11"


def imported(tmp_path: Path, source: Path = EXPORT) -> Path:
    project = tmp_path / "p.db"
    with Store(project) as store:
        store_import(store, RUBRIC, "labelstudio", read_tasks(source, RUBRIC), source)
    return project


def contents(project: Path) -> tuple[list, list]:
    with Store(project) as store:
        items = [(i.id, i.fields) for i in store.items()]
        return items, sorted(r[:4] for r in store.reviews())


def test_the_documented_export_imports_as_items_and_reviews_per_annotator(tmp_path):
    items, reviews = contents(imported(tmp_path))
    assert items == [
        ("1", {"text": "Good case, Excellent value."}),
        ("2", {"text": "What a waste of money and time!"}),
        ("3", {"text": "The goose neck needs a little coaxing"}),
    ]
    # choices: the one choice; rating: the number; taxonomy: the path's leaf. The cancelled
    # annotation (1004) gives nothing.
    assert reviews == [
        ("1", "quality", USER_10, 4),
        ("1", "sentiment", USER_10, "Positive"),
        ("1", "sentiment", USER_11, "Neutral"),
        ("1", "topic", USER_10, "Price"),
        ("2", "quality", USER_10, 1),
        ("2", "sentiment", USER_10, "Negative"),
    ]
    with Store(tmp_path / "p.db") as store:
        assert {r[4] for r in store.reviews()} == {"import"}  # they count for `agree`


def test_a_user_written_as_an_object_is_named_by_email_else_number(tmp_path):
    tasks = json.loads(EXPORT.read_text())
    tasks[0]["annotations"][0]["completed_by"] = {"id": 10, "email": "ana@example.org"}
    tasks[0]["annotations"][1]["completed_by"] = {"id": 11}
    source = tmp_path / "users.json"
    source.write_text(json.dumps(tasks))
    reviewers = {name for name in read_tasks(source, RUBRIC).reviews}
    assert reviewers == {"ana@example.org", USER_10, USER_11}  # task 2 keeps plain number 10


def test_fields_not_mapped_are_kept(tmp_path):
    with Store(imported(tmp_path)) as store:
        kept = kept_fields(store, "labelstudio")
    task = json.loads(EXPORT.read_text())[0]
    assert kept["1"]["data"] == {"source": "amazon"}
    assert kept["1"]["project"] == 83 and kept["1"]["created_at"] == task["created_at"]
    assert kept["1"]["annotations"] == task["annotations"]  # verbatim, lead_time and all
    assert kept["1"]["predictions"] == task["predictions"]
    assert kept["2"]["annotations"][1]["was_cancelled"] is True


def _annotate(project: Path) -> int:
    with Store(project) as store:
        run_id, _ = store.find_or_start_run(
            model_path="m.gguf",
            model_sha256="ab" * 32,
            rubric=RUBRIC,
            data_path="d.jsonl",
            data_sha256="0" * 64,
            settings={},
        )
        for item, (s, q, t) in zip(
            "123",
            [("Positive", 5, "Price"), ("Negative", 2, "Delivery"), ("Neutral", 3, "Price")],
            strict=True,
        ):
            labels = {"sentiment": Label(s, 0.8, 0.4), "quality": Label(q, 0.6, 0.2)}
            labels["topic"] = Label(t, 0.7, 0.3)
            store.save_annotation(run_id, item, labels, 5, 0, 0.01)
    return run_id


def _results(project: Path, out: Path) -> list:
    with Store(project) as store:
        n = write_results_as(store, RUBRIC, store.run(), "labelstudio", out)
    assert n == 3
    return json.loads(out.read_text(encoding="utf-8"))


def test_results_are_tasks_in_the_documented_import_shape(tmp_path):
    project = imported(tmp_path)
    run_id = _annotate(project)
    tasks = _results(project, tmp_path / "out.json")
    # Label Studio's import: a list of tasks, each with a `data` object (the values its
    # labeling config's $variables read) and optional `predictions`, each a `model_version`
    # and `result` entries of from_name, to_name, type and value (guide/task_format,
    # guide/predictions).
    assert isinstance(tasks, list) and len(tasks) == 3
    for task in tasks:
        assert isinstance(task["data"], dict) and isinstance(task["data"]["text"], str)
        ours = task["predictions"][-1]
        assert ours["model_version"] == f"annotator run {run_id} ({'ab' * 6})"
        assert isinstance(ours["score"], float)
        ids = [e["id"] for p in task["predictions"] for e in p["result"]]
        assert len(set(ids)) == len(ids)  # "different IDs for ... their result items"
        for entry in ours["result"]:
            assert set(entry) == {"id", "from_name", "to_name", "type", "value"}
            assert entry["to_name"] == "text" and entry["type"] in ("choices", "rating")
            assert set(entry["value"]) == {entry["type"]}
    first = tasks[0]["predictions"][-1]["result"]
    assert [(e["from_name"], e["type"], e["value"]) for e in first] == [
        ("sentiment", "choices", {"choices": ["Positive"]}),
        ("quality", "rating", {"rating": 5}),
        ("topic", "choices", {"choices": ["Price"]}),
    ]
    # What the import kept goes back where it was.
    assert tasks[0]["id"] == 1 and tasks[0]["project"] == 83
    assert tasks[0]["data"] == {"text": "Good case, Excellent value.", "source": "amazon"}
    original = json.loads(EXPORT.read_text())[0]
    assert tasks[0]["annotations"] == original["annotations"]
    assert tasks[0]["predictions"][:-1] == original["predictions"]


def test_results_import_again_with_the_same_items_and_reviews(tmp_path):
    project = imported(tmp_path)
    _annotate(project)
    out = tmp_path / "out.json"
    _results(project, out)
    (tmp_path / "again").mkdir()
    again = imported(tmp_path / "again", out)
    assert contents(again) == contents(project)


def test_a_choice_not_in_the_rubric_is_refused_naming_task_and_field(tmp_path):
    tasks = json.loads(EXPORT.read_text())
    tasks[1]["annotations"][0]["result"][0]["value"]["choices"] = ["Mixed"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tasks))
    with pytest.raises(AnnotatorError) as err:
        read_tasks(bad, RUBRIC)
    assert str(err.value) == (
        f"{bad} task[1].annotations[0].result[0].value.choices: "
        "'Mixed' is not one of Positive, Negative, Neutral"
    )


def test_a_control_that_is_no_dimension_is_refused(tmp_path):
    tasks = json.loads(EXPORT.read_text())
    tasks[0]["annotations"][1]["result"][0]["from_name"] = "mood"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tasks))
    with pytest.raises(AnnotatorError) as err:
        read_tasks(bad, RUBRIC)
    assert str(err.value) == (
        f"{bad} task[0].annotations[1].result[0].from_name: 'mood' is not a dimension of "
        "the rubric (sentiment, quality, topic)"
    )


def test_a_missing_input_and_two_choices_are_refused(tmp_path):
    tasks = json.loads(EXPORT.read_text())
    del tasks[2]["data"]["text"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tasks))
    with pytest.raises(AnnotatorError, match=r"task\[2\]\.data\.text: missing \(an input of"):
        read_tasks(bad, RUBRIC)
    tasks = json.loads(EXPORT.read_text())
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["Positive", "Neutral"]
    bad.write_text(json.dumps(tasks))
    with pytest.raises(AnnotatorError, match=r"task\[0\].*value\.choices: one choice expected"):
        read_tasks(bad, RUBRIC)


def test_a_refused_file_stores_nothing_and_keeps_what_was_there(tmp_path, capsys):
    project = imported(tmp_path)
    before = contents(project)
    tasks = json.loads(EXPORT.read_text())
    tasks[0]["data"]["text"] = "other text"  # task 1 is stored with its own text
    tasks.append({"id": 9, "data": {"text": "new"}, "annotations": []})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tasks))
    code, err = annotator(capsys, "import", str(project), str(bad), "--format", "labelstudio")
    assert code == 1
    assert err.strip().splitlines() == [
        f"annotator: error: {bad}: the record with id '1': text not as the project holds "
        "that item; nothing imported"
    ]
    assert contents(project) == before
    # A file refused while reading: a new project is not even created.
    tasks[0]["annotations"][0]["completed_by"] = "model"
    bad.write_text(json.dumps(tasks))
    code, err = annotator(capsys, "import", str(tmp_path / "new.db"), str(bad), "--format", "labelstudio",
                   "--rubric", str(DATA / "reviews.toml"))  # fmt: skip
    assert code == 1
    assert "task[0].annotations[0].completed_by: 'model' is reserved" in err
    assert not (tmp_path / "new.db").exists()


def test_the_commands_import_and_write_results(tmp_path, capsys):
    project = tmp_path / "p.db"
    rubric = DATA / "reviews.toml"
    items = tmp_path / "items.jsonl"
    code, err = annotator(capsys, "import", str(project), str(EXPORT), "--format", "labelstudio",
                          "--rubric", str(rubric), "--items-out", str(items))  # fmt: skip
    assert code == 0, err
    assert err.strip() == "imported 3 items and 6 labels from 2 reviewers"
    # The items as `annotate` reads a data file: the same ids and text, so it labels them.
    _, read, skipped = read_items(items, ["text"])
    assert [(i.id, i.fields) for i in read] == contents(project)[0] and skipped == []
    _annotate(project)
    out = tmp_path / "tasks.json"
    code, err = annotator(
        capsys, "results", str(project), "--format", "labelstudio", "--out", str(out)
    )
    assert code == 0, err
    assert err.strip() == f"wrote 3 tasks to {out}"
    assert [t["id"] for t in json.loads(out.read_text())] == [1, 2, 3]
    assert out.stat().st_mode & 0o077 == 0  # it holds item text
    code, err = annotator(capsys, "results", str(project), "--format", "labelstudio",
                          "--out", str(tmp_path / "tasks.csv"))  # fmt: skip
    assert (code, err.strip()) == (
        1,
        f"annotator: error: {tmp_path / 'tasks.csv'}: a labelstudio file must end in .json",
    )


def test_an_id_that_is_no_integer_goes_in_data_and_comes_back(tmp_path):
    project = tmp_path / "p.db"
    with Store(project) as store:
        store.bind_rubric(RUBRIC)
        store.add_items([Item("a-1", 1, {"text": "one"}), Item("b 2", 2, {"text": "two"})])
        run_id, _ = store.find_or_start_run(
            model_path="m.gguf",
            model_sha256="ab" * 32,
            rubric=RUBRIC,
            data_path="d.csv",
            data_sha256="0" * 64,
            settings={},
        )
        for item in ("a-1", "b 2"):
            labels = {"sentiment": Label("Neutral", 0.5, 0.1), "quality": Label(2, 0.5, 0.1)}
            labels["topic"] = Label("Delivery", 0.5, 0.1)
            store.save_annotation(run_id, item, labels, 5, 0, 0.01)
    out = tmp_path / "out.json"
    with Store(project) as store:
        write_results_as(store, RUBRIC, store.run(), "labelstudio", out)
    tasks = json.loads(out.read_text())
    # guide/tasks: a task's optional `id` is an integer; `data` holds any keys.
    assert ["id" in t for t in tasks] == [False, False]
    assert [t["data"] for t in tasks] == [
        {"text": "one", "id": "a-1"},
        {"text": "two", "id": "b 2"},
    ]
    (tmp_path / "again").mkdir()
    assert contents(imported(tmp_path / "again", out))[0] == contents(project)[0]
