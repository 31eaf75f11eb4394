"""`annotator review import`: what a review file may hold and who may be named as its reviewer.

Projects are built through the Store directly (no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from annotator.data import Item
from annotator.errors import AnnotatorError
from annotator.project.reviews import import_reviews
from annotator.project.store import Store
from annotator.rubric import rubric_from_dict

RUBRIC = rubric_from_dict(
    {
        "name": "imports",
        "instructions": "Rate the note.",
        "inputs": [{"column": "text", "label": "NOTE"}],
        "dimensions": [
            {"name": "tone", "question": "Tone?", "scale": "ordinal", "values": [1, 2, 3]}
        ],
    },
    "test",
)


def make_project(path: Path) -> Path:
    with Store(path) as store:
        store.bind_rubric(RUBRIC)
        store.add_items([Item(i, n, {"text": f"note {i}"}) for n, i in enumerate("abcd", start=1)])
    return path


def stored_reviews(project: Path) -> list:
    with Store(project) as store:
        return sorted(store.reviews())


def test_a_number_of_5000_digits_in_a_jsonl_review_file_is_one_problem_line(tmp_path):
    project = make_project(tmp_path / "p.db")
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        json.dumps({"id": "a", "tone": 2}) + "\n" + '{"id": "b", "tone": ' + "2" * 5000 + "}\n",
        encoding="utf-8",
    )
    done = run_cli("review", "import", str(project), str(labels), "--reviewer", "ana")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "stored 1 labels from 'ana' for 1 items" in done.stderr
    assert f"{labels} row 2: holds a number of 5000 digits (at most 4300 are read)" in done.stderr


def test_the_same_id_twice_is_refused_naming_the_rows(tmp_path):
    project = make_project(tmp_path / "p.db")
    labels = tmp_path / "labels.csv"
    labels.write_text("id,tone\na,1\nb,2\na,3\nc,1\n b ,2\n", encoding="utf-8")
    with Store(project) as store, pytest.raises(AnnotatorError) as err:
        import_reviews(store, labels, "ana")
    assert str(err.value) == (
        f"{labels}: the same id on more than one row: 'a' on rows 1 and 3, "
        "'b' on rows 2 and 5; nothing imported"
    )
    assert stored_reviews(project) == []
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text('{"id": "d", "tone": 1}\n{"id": "d", "tone": 1}\n', encoding="utf-8")
    done = run_cli("review", "import", str(project), str(jsonl), "--reviewer", "ana")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"annotator: error: {jsonl}: the same id on more than one row: 'd' on rows 1 and 2; "
        "nothing imported"
    ]


def test_duplicate_header_columns_are_refused_naming_them(tmp_path):
    project = make_project(tmp_path / "p.db")
    labels = tmp_path / "labels.csv"
    labels.write_text("id,tone,note,tone\na,1,x,3\n", encoding="utf-8")
    done = run_cli("review", "import", str(project), str(labels), "--reviewer", "ana")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"annotator: error: {labels}: column 'tone' appears twice in the header (columns 2 and 4)"
    ]
    assert stored_reviews(project) == []


@pytest.mark.parametrize(
    "name, why",
    [
        ("", "a name is needed"),
        ("   ", "a name is needed"),
        ("model", "'model' is reserved for the model"),
        ("x" * 101, "use a short, printable name"),
        ("ana\x1b[31m", "use a short, printable name"),
        ("ana\tb", "use a short, printable name"),
    ],
)
def test_reviewer_names_are_checked_as_the_app_checks_them(tmp_path, name, why):
    project = make_project(tmp_path / "p.db")
    labels = tmp_path / "labels.csv"
    labels.write_text("id,tone\na,1\n", encoding="utf-8")
    done = run_cli("review", "import", str(project), str(labels), "--reviewer", name)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("annotator: error: --reviewer: "), done.stderr
    assert why in lines[0] and "\x1b" not in lines[0]
    assert stored_reviews(project) == []


def test_the_app_and_the_command_line_share_one_rule():
    from annotator.project.reviews import check_reviewer
    from annotator.tui.widgets import review_view

    assert review_view.check_reviewer is check_reviewer


def test_a_reviewer_named_like_markup_is_stored_and_printed_as_text(tmp_path):
    project = make_project(tmp_path / "p.db")
    with Store(project) as store:
        store.find_or_start_run(
            model_path="m.gguf",
            model_sha256="0" * 64,
            rubric=RUBRIC,
            data_path="d.csv",
            data_sha256="0" * 64,
            settings={},
        )
        for n, item in enumerate("abcd"):
            store.save_annotation(1, item, {"tone": _label(1 + n % 3)}, 5, 0, 0.01)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,tone\na,1\nb,2\nc,3\nd,1\n", encoding="utf-8")
    for reviewer in ("[bob]", "[/x]", ":smile:"):
        done = run_cli("review", "import", str(project), str(labels), "--reviewer", reviewer)
        assert done.returncode == 0, done.stderr
        assert f"stored 4 labels from {reviewer!r} for 4 items" in done.stderr
    done = run_cli("agree", str(project), "--bootstrap", "0", "--pairs", env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for reviewer in ("[bob]", "[/x]", ":smile:"):
        assert f"model vs {reviewer}" in text


def _label(value):
    from annotator.project.store import Label

    return Label(value, 0.9, 0.5)
