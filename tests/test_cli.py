"""The `annotator` command end to end, in subprocesses, with the real default model."""

import csv
import json
import shutil

import pytest
from conftest import SAMPLES, offline_site, run_cli, write_csv

GOEMO = SAMPLES / "goemotions"


@pytest.fixture
def offline_env(tmp_path):
    return {"PYTHONPATH": str(offline_site(tmp_path / "offline_site")), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """The goemotions sample annotated once into a project (used by several tests)."""
    tmp = tmp_path_factory.mktemp("annotated")
    project = tmp / "p.db"
    done = run_cli(
        "annotate",
        str(GOEMO / "items.csv"),
        "--rubric",
        str(GOEMO / "rubric.toml"),
        "--project",
        str(project),
    )
    assert done.returncode == 0, done.stderr
    return project, done


def test_annotate_end_to_end_with_sockets_blocked(tmp_path, offline_env):
    project = tmp_path / "p.db"
    done = run_cli(
        "annotate",
        str(GOEMO / "items.csv"),
        "--rubric",
        str(GOEMO / "rubric.toml"),
        "--project",
        str(project),
        env=offline_env,
    )
    assert done.returncode == 0, done.stderr
    assert "done 40 of 40 items" in done.stderr
    # The guard really is active in that environment.
    probe = run_cli("doctor", env={**offline_env, "PYTHONSTARTUP": ""})
    assert probe.returncode == 0
    import subprocess
    import sys

    check = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9))"],
        env={**offline_env},
        capture_output=True,
        text=True,
    )
    assert "network access attempted" in check.stderr


def test_summary_and_no_item_text_in_output(annotated):
    _, done = annotated
    assert "done 40 of 40 items (40 now, 0 before), skipped 0 rows, flagged" in done.stderr
    assert "items/s" in done.stderr and "run 1" in done.stderr and "CPU" in done.stderr
    texts = [row["text"] for row in csv.DictReader((GOEMO / "items.csv").open())]
    assert not any(t in done.stderr or t in done.stdout for t in texts if len(t) > 12)


def test_results_files_are_byte_identical_across_projects_and_orders(tmp_path, annotated):
    project, _ = annotated
    first = tmp_path / "first.csv"
    assert run_cli("results", str(project), "--out", str(first)).returncode == 0
    rows = list(csv.DictReader((GOEMO / "items.csv").open()))[::-1]  # reversed order
    data = write_csv(tmp_path / "reversed.csv", rows)
    other = tmp_path / "q.db"
    assert (
        run_cli(
            "annotate", str(data), "--rubric", str(GOEMO / "rubric.toml"), "--project", str(other)
        ).returncode
        == 0
    )
    second = tmp_path / "second.csv"
    assert run_cli("results", str(other), "--out", str(second)).returncode == 0
    # Row order follows the data file, so compare as sorted lines: same bytes per item.
    a, b = first.read_text().splitlines(), second.read_text().splitlines()
    assert a[0] == b[0] and sorted(a[1:]) == sorted(b[1:])
    header = a[0].split(",")
    assert header == ["id", "emotion", "emotion_p", "emotion_margin", "truncated"]
    jsonl = tmp_path / "r.jsonl"
    assert run_cli("results", str(project), "--out", str(jsonl)).returncode == 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 40 and set(records[0]) == set(header)


def test_rerun_resumes_without_work(annotated):
    project, _ = annotated
    again = run_cli(
        "annotate",
        str(GOEMO / "items.csv"),
        "--rubric",
        str(GOEMO / "rubric.toml"),
        "--project",
        str(project),
    )
    assert again.returncode == 0
    assert "(0 now, 40 before)" in again.stderr and "(resumed)" in again.stderr


def test_skipped_rows_are_counted_and_stored(tmp_path):
    data = tmp_path / "d.csv"
    data.write_bytes(b"id,text\n1,fine text\n2,\n1,duplicate\n3,bad \xff byte\n")
    project = tmp_path / "p.db"
    done = run_cli(
        "annotate", str(data), "--rubric", str(GOEMO / "rubric.toml"), "--project", str(project)
    )
    assert done.returncode == 0, done.stderr
    assert "done 1 of 1 items" in done.stderr and "skipped 3 rows" in done.stderr
    assert "skipped row 2 (id 2): empty text in column 'text'" in done.stderr
    assert "skipped row 3 (id 1): duplicate id (first at row 1)" in done.stderr
    assert "skipped row 4: undecodable bytes (not UTF-8)" in done.stderr
    import sqlite3

    with sqlite3.connect(project) as db:
        assert db.execute("SELECT count(*) FROM skipped").fetchone()[0] == 3


def test_a_jsonl_number_of_5000_digits_is_a_skipped_row_not_a_traceback(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps({"id": "a", "text": "fine text"})
        + "\n"
        + '{"id": "b", "text": "x", "n": '
        + "7" * 5000
        + "}\n",
        encoding="utf-8",
    )
    done = run_cli(
        "annotate",
        str(data),
        "--rubric",
        str(GOEMO / "rubric.toml"),
        "--project",
        str(tmp_path / "p.db"),
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "done 1 of 1 items" in done.stderr and "skipped 1 rows" in done.stderr
    assert "skipped row 2: holds a number of 5000 digits (at most 4300 are read)" in done.stderr


def test_review_import_reports_unknown_ids_and_invalid_values(tmp_path, annotated):
    project, _ = annotated
    shutil.copy(project, tmp_path / "p.db")
    project = tmp_path / "p.db"
    ids = [row["id"] for row in csv.DictReader((GOEMO / "items.csv").open())]
    labels = write_csv(
        tmp_path / "labels.csv",
        [
            {"id": ids[0], "emotion": "joy"},
            {"id": ids[1], "emotion": ""},  # blank: not reviewed
            {"id": "nope", "emotion": "joy"},  # unknown id
            {"id": ids[2], "emotion": "hunger"},  # not an allowed value
            {"id": ids[3], "emotion": "neutral"},
        ],
    )
    done = run_cli("review", "import", str(project), str(labels), "--reviewer", "ana")
    assert done.returncode == 0, done.stderr
    assert "stored 2 labels from 'ana' for 2 items" in done.stderr
    assert "row 3: unknown id 'nope'" in done.stderr
    assert "row 4: emotion: 'hunger' is not one of" in done.stderr
    report = json.loads(run_cli("agree", str(project), "--json", "--bootstrap", "20").stdout)
    pair = report["dimensions"][0]["comparisons"][0]
    assert pair["coders"] == ["model", "ana"] and pair["n"] == 2


def test_inspect_and_doctor(default_model):
    done = run_cli("inspect", str(default_model))
    assert done.returncode == 0, done.stderr
    assert "gemma3" in done.stdout and "Q4_K_M" in done.stdout
    assert "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818" in done.stdout
    assert "rubric        none" in done.stdout
    doc = run_cli("doctor")
    assert doc.returncode == 0 and "backend" in doc.stdout and "CPU" in doc.stdout
    assert str(default_model) in doc.stdout


@pytest.mark.parametrize("kind", ["truncated", "not_gguf", "missing", "empty"])
def test_bad_model_files_give_one_line_errors(tmp_path, default_model, kind):
    bad = tmp_path / "bad.gguf"
    if kind == "truncated":
        bad.write_bytes(default_model.read_bytes()[:50_000_000])
    elif kind == "not_gguf":
        bad.write_text("hello, I am not a model")
    elif kind == "empty":
        bad.write_bytes(b"")
    for args in (
        ["inspect", str(bad)],
        [
            "annotate",
            str(GOEMO / "items.csv"),
            "--rubric",
            str(GOEMO / "rubric.toml"),
            "--project",
            str(tmp_path / "p.db"),
            "--model",
            str(bad),
        ],
    ):
        done = run_cli(*args)
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"annotator: error: {bad}: "), done.stderr
        assert "Traceback" not in done.stderr


def test_bad_inputs_give_one_line_errors(tmp_path):
    bad_rubric = tmp_path / "r.toml"
    bad_rubric.write_text('name = "x"\ninstructions = "y"\n[[inputs]]\ncolumn = "text"\n')
    missing_col = write_csv(tmp_path / "m.csv", [{"id": "1", "body": "x"}])
    empty = tmp_path / "e.csv"
    empty.write_text("")
    cases = [
        (
            ["--rubric", str(bad_rubric)],
            str(GOEMO / "items.csv"),
            "r.toml: invalid rubric: dimensions: must be a non-empty list",
        ),
        (
            ["--rubric", str(GOEMO / "rubric.toml")],
            str(missing_col),
            "m.csv: missing column(s) 'text'",
        ),
        (["--rubric", str(GOEMO / "rubric.toml")], str(empty), "e.csv: data file is empty"),
        ([], str(GOEMO / "items.csv"), "the model carries no rubric; pass --rubric"),
    ]
    for extra, data, message in cases:
        done = run_cli("annotate", data, "--project", str(tmp_path / "p.db"), *extra)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], done.stderr


def test_project_is_tied_to_its_rubric(tmp_path, annotated):
    project, _ = annotated
    shutil.copy(project, tmp_path / "p.db")
    done = run_cli(
        "annotate",
        str(SAMPLES / "newsroom" / "items.csv"),
        "--rubric",
        str(SAMPLES / "newsroom" / "rubric.toml"),
        "--project",
        str(tmp_path / "p.db"),
    )
    assert done.returncode == 1 and "use a new project file" in done.stderr
