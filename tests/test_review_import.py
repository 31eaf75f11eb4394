"""`annotator review import`: what a review file may hold and who may be named as its reviewer.

Projects are built through the Store directly (no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli

from annotator.data import Item
from annotator.rubric import rubric_from_dict
from annotator.store import Store

RUBRIC = rubric_from_dict({
    "name": "imports",
    "instructions": "Rate the note.",
    "inputs": [{"column": "text", "label": "NOTE"}],
    "dimensions": [{"name": "tone", "question": "Tone?", "scale": "ordinal", "values": [1, 2, 3]}],
}, "test")


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
    labels.write_text(json.dumps({"id": "a", "tone": 2}) + "\n"
                      + '{"id": "b", "tone": ' + "2" * 5000 + "}\n", encoding="utf-8")
    done = run_cli("review", "import", str(project), str(labels), "--reviewer", "ana")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "stored 1 labels from 'ana' for 1 items" in done.stderr
    assert f"{labels} row 2: holds a number of 5000 digits (at most 4300 are read)" in done.stderr

