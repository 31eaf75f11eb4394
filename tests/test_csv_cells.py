"""CSV/TSV files that leave the tool are opened in spreadsheets: a cell that a spreadsheet
would evaluate (OWASP "CSV injection") is written with a leading single quote, unless the
user asks for raw cells. Plain numbers stay numbers, so labels survive `train --data`."""

from __future__ import annotations

import csv
import json

from conftest import run_cli

from annotator.data import Item, safe_cell, write_rows
from annotator.project.store import Store
from annotator.rubric import rubric_from_dict

RUBRIC = rubric_from_dict(
    {
        "name": "cells",
        "instructions": "Rate the note.",
        "inputs": [{"column": "text", "label": "NOTE"}],
        "dimensions": [
            {"name": "tone", "question": "Tone?", "scale": "ordinal", "values": [-1, 0, 1]}
        ],
    },
    "test",
)

FORMULA_ID = '=HYPERLINK("http://x","y")'
ITEMS = {
    FORMULA_ID: "=1+1 looks like a sum",
    "+plus": "@SUM(A1:A2)",
    "-minus": "\tindented",
    "plain": "-1",
}


def test_safe_cell_quotes_formula_starts_but_not_plain_numbers():
    for text in ("=1+1", "+x", "-x", "@x", "\tx", "\rx", "- 1", "-"):
        assert safe_cell(text) == "'" + text
    for text in ("-1", "+0.5", "-2e-3", "3", "", "a=b", " =x", "'quoted"):
        assert safe_cell(text) == text
    assert safe_cell(-1) == -1


def test_write_rows_neutralises_csv_and_tsv_but_keeps_jsonl_exact(tmp_path):
    rows = [{"id": i, "text": t} for i, t in ITEMS.items()]
    for suffix, delimiter in ((".csv", ","), (".tsv", "\t")):
        out = tmp_path / f"r{suffix}"
        write_rows(out, ["id", "text"], rows)
        read = list(csv.DictReader(out.open(newline=""), delimiter=delimiter))
        assert [r["id"] for r in read] == ["'" + FORMULA_ID, "'+plus", "'-minus", "plain"]
        assert [r["text"] for r in read] == [
            "'=1+1 looks like a sum",
            "'@SUM(A1:A2)",
            "'\tindented",
            "-1",
        ]
        raw = tmp_path / f"raw{suffix}"
        write_rows(raw, ["id", "text"], rows, raw_cells=True)
        read = list(csv.DictReader(raw.open(newline=""), delimiter=delimiter))
        assert [(r["id"], r["text"]) for r in read] == list(ITEMS.items())
    out = tmp_path / "r.jsonl"
    write_rows(out, ["id", "text"], rows)
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows


def _project(path):
    with Store(path) as store:
        store.bind_rubric(RUBRIC)
        store.add_items([Item(i, n, {"text": t}) for n, (i, t) in enumerate(ITEMS.items(), 1)])
        store.save_reviews("ana", "audit", [(i, "tone", -1) for i in ITEMS])
    return path


def test_reviews_export_quotes_by_default_and_raw_cells_opts_out(tmp_path):
    project = _project(tmp_path / "p.db")
    safe, raw = tmp_path / "safe.csv", tmp_path / "raw.csv"
    assert run_cli("reviews", "export", str(project), "--out", str(safe)).returncode == 0
    done = run_cli("reviews", "export", str(project), "--out", str(raw), "--raw-cells")
    assert done.returncode == 0, done.stderr
    safe_rows = list(csv.DictReader(safe.open(newline="")))
    assert {r["id"] for r in safe_rows} == {"'" + FORMULA_ID, "'+plus", "'-minus", "plain"}
    assert {r["tone"] for r in safe_rows} == {"-1"}  # a number, not a formula: unchanged
    assert {r["text"] for r in safe_rows} >= {"'=1+1 looks like a sum", "-1"}
    raw_rows = list(csv.DictReader(raw.open(newline="")))
    assert {r["id"]: r["text"] for r in raw_rows} == ITEMS


def test_a_neutralised_reviews_export_still_trains(tmp_path):
    """`train --data` reads the default CSV: every row is usable and -1 is still -1."""
    from annotator.train.args import DataArgs
    from annotator.train.data import read_labeled

    project = _project(tmp_path / "p.db")
    out = tmp_path / "labeled.csv"
    assert run_cli("reviews", "export", str(project), "--out", str(out)).returncode == 0
    data = read_labeled(DataArgs(paths=[out], rubric=tmp_path / "unused.toml"), RUBRIC)
    assert len(data.items) == len(ITEMS)
    assert {item.labels["tone"] for item in data.items} == {-1}


def test_results_csv_neutralises_ids_and_raw_cells_keeps_them(tmp_path):
    from annotator.project.results import write_results

    rows = [{"id": FORMULA_ID, "tone": -1, "tone_p": 0.5, "tone_margin": 0.25, "truncated": 0}]
    write_results(tmp_path / "r.csv", RUBRIC, rows)
    assert (tmp_path / "r.csv").read_text().splitlines()[1].startswith("\"'=HYPERLINK(")
    assert ",-1,0.500000,0.250000,0" in (tmp_path / "r.csv").read_text()
    write_results(tmp_path / "raw.csv", RUBRIC, rows, raw_cells=True)
    assert (tmp_path / "raw.csv").read_text().splitlines()[1].startswith('"=HYPERLINK(')
