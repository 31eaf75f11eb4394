"""`annotator review(s) export`: reviewed items to a labelled file that `annotator train` reads.

Projects are built through the Store directly (no model is loaded): a rubric, items, and
reviews saved as the review queues and `review import` save them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from annotator.data import Item
from annotator.errors import AnnotatorError
from annotator.project.reviews import export_reviews
from annotator.project.store import Store
from annotator.rubric import rubric_from_dict

RUBRIC = rubric_from_dict(
    {
        "name": "smoke",
        "instructions": "Read the review and its title. Label it.",
        "inputs": [{"column": "title", "label": "TITLE"}, {"column": "text", "label": "REVIEW"}],
        "dimensions": [
            {
                "name": "sentiment",
                "question": "What is the sentiment?",
                "scale": "nominal",
                "values": ["positive", "negative", "mixed"],
            },
            {
                "name": "quality",
                "question": "How well written is it?",
                "scale": "ordinal",
                "values": [1, 2, 3],
            },
        ],
    },
    "test",
)

# Texts that a careless writer would mangle: delimiters, quotes, newlines, tabs, non-ASCII,
# leading and trailing spaces. Each is distinctive so the command's output can be searched.
TEXTS = {
    "r1": {"title": 'zanzibar, quoted "vexillum"', "text": "quibbling\nfrumious borogove, snark"},
    "r2": {"title": "  padded quokka  ", "text": "tab\tjabberwock\tslithy and émigré ünïcode"},
    "r3": {"title": "plain xylophone", "text": "gimble wabe mimsy"},
    "r4": {"title": "never reviewed marmot", "text": "outgrabe bandersnatch"},
    "r5": {"title": "partly reviewed okapi", "text": "vorpal tulgey uffish"},
}


def make_project(path: Path, reviews: dict[tuple[str, str], list[tuple[str, str, object]]]) -> Path:
    """reviews: (reviewer, queue) -> [(item id, dimension, value)]."""
    with Store(path) as store:
        store.bind_rubric(RUBRIC)
        store.add_items(
            [Item(i, n, fields) for n, (i, fields) in enumerate(TEXTS.items(), start=1)]
        )
        for (reviewer, queue), rows in reviews.items():
            store.save_reviews(reviewer, queue, rows)
    return path


BASIC = {
    ("ana", "audit"): [
        ("r1", "sentiment", "positive"),
        ("r1", "quality", 3),
        ("r2", "sentiment", "mixed"),
        ("r2", "quality", 1),
        ("r5", "quality", 2),
    ],
    ("ana", "hard"): [("r3", "sentiment", "negative"), ("r3", "quality", 2)],
}


def assert_no_text(done) -> None:
    shown = done.stdout + done.stderr
    for fields in TEXTS.values():
        for text in fields.values():
            for piece in text.replace(",", " ").replace('"', " ").split():
                if len(piece) >= 5 and piece not in (
                    "quoted",
                    "padded",
                    "plain",
                    "never",
                    "reviewed",
                    "partly",
                ):
                    assert piece not in shown, f"item text {piece!r} reached the terminal"


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_round_trip_through_the_training_reader(tmp_path, suffix):
    import annotator.train  # noqa: F401  (the package sets its offline environment first)
    from annotator.train.args import DataArgs
    from annotator.train.data import read_labeled

    project = make_project(tmp_path / "p.db", BASIC)
    out = tmp_path / f"labeled{suffix}"
    done = run_cli("reviews", "export", str(project), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert f"wrote 4 items (7 labels) to {out}; 0 conflicting cells left blank" in done.stderr
    assert "1 items lack a label" in done.stderr
    assert_no_text(done)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left

    data = read_labeled(DataArgs(paths=[out], rubric=tmp_path / "rubric.toml"), RUBRIC)
    got = {i.id: (i.fields, i.labels) for i in data.items}
    assert got == {
        "r1": (TEXTS["r1"], {"sentiment": "positive", "quality": 3}),
        "r2": (TEXTS["r2"], {"sentiment": "mixed", "quality": 1}),
        "r3": (TEXTS["r3"], {"sentiment": "negative", "quality": 2}),
    }
    # r5 is written (it has a label) but training skips it for its blank sentiment; r4 (no
    # review) is not written at all.
    assert [(s.id, s.reason) for _, s in data.skipped] == [
        ("r5", "empty text in column 'sentiment'")
        if suffix != ".jsonl"
        else ("r5", "column 'sentiment' is not text")
    ]


def test_written_rows_columns_and_blanks(tmp_path):
    project = make_project(tmp_path / "p.db", BASIC)
    out = tmp_path / "labeled.jsonl"
    with Store(project) as store:
        report = export_reviews(store, out)
    assert (report.items, report.labels, report.conflicts, report.incomplete) == (4, 7, 0, 1)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [list(r) for r in rows] == [["id", "title", "text", "sentiment", "quality"]] * 4
    assert [r["id"] for r in rows] == ["r1", "r2", "r3", "r5"]  # store order; r4 unreviewed
    assert rows[3] == {"id": "r5", **TEXTS["r5"], "sentiment": None, "quality": 2}

    csv_out = tmp_path / "labeled.csv"
    with Store(project) as store:
        export_reviews(store, csv_out)
    lines = csv_out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id,title,text,sentiment,quality"
    assert lines[-1].startswith("r5,") and lines[-1].endswith(",,2")


def test_reviewers_who_disagree_leave_the_cell_blank(tmp_path):
    reviews = {
        ("ana", "audit"): [
            ("r1", "sentiment", "positive"),
            ("r1", "quality", 3),
            ("r2", "sentiment", "mixed"),
            ("r2", "quality", 1),
        ],
        ("ben", "import"): [
            ("r1", "sentiment", "positive"),
            ("r1", "quality", 2),  # quality differs
            ("r2", "sentiment", "negative"),
            ("r2", "quality", 3),
        ],  # both differ
        ("cy", "audit"): [("r1", "sentiment", "positive")],  # a third, agreeing
    }
    project = make_project(tmp_path / "p.db", reviews)
    out = tmp_path / "labeled.jsonl"
    done = run_cli("reviews", "export", str(project), "--out", str(out))
    assert done.returncode == 0, done.stderr
    # r2 has no agreed cell at all, so it is not written
    assert f"wrote 1 items (1 labels) to {out}; 3 conflicting cells left blank" in done.stderr
    assert_no_text(done)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == [{"id": "r1", **TEXTS["r1"], "sentiment": "positive", "quality": None}]

    # one reviewer's labels: no conflicts
    ben = tmp_path / "ben.jsonl"
    done = run_cli("review", "export", str(project), "--out", str(ben), "--reviewer", "ben")
    assert done.returncode == 0, done.stderr
    assert "wrote 2 items (4 labels)" in done.stderr and "0 conflicting" in done.stderr
    rows = [json.loads(line) for line in ben.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["sentiment"], r["quality"]) for r in rows] == [
        ("r1", "positive", 2),
        ("r2", "negative", 3),
    ]

    missing = run_cli(
        "review", "export", str(project), "--out", str(tmp_path / "z.csv"), "--reviewer", "zed"
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0
    assert "no reviews by 'zed'" in missing.stderr and "ana, ben, cy" in missing.stderr
    assert not (tmp_path / "z.csv").exists()


def test_queue_filter(tmp_path):
    project = make_project(tmp_path / "p.db", BASIC)
    with Store(project) as store:
        hard = export_reviews(store, tmp_path / "hard.csv", queue="hard")
        audit = export_reviews(store, tmp_path / "audit.csv", queue="audit")
        with pytest.raises(AnnotatorError, match="no reviews in the 'import' queue"):
            export_reviews(store, tmp_path / "import.csv", queue="import")
    assert (hard.items, hard.labels) == (1, 2)
    assert (audit.items, audit.labels) == (3, 5)
    assert [line.split(",")[0] for line in (tmp_path / "hard.csv").read_text().splitlines()] == [
        "id",
        "r3",
    ]
    assert not (tmp_path / "import.csv").exists()

    done = run_cli(
        "reviews", "export", str(project), "--out", str(tmp_path / "h.tsv"), "--queue", "hard"
    )
    assert done.returncode == 0 and "wrote 1 items (2 labels)" in done.stderr
    bad = run_cli(
        "reviews", "export", str(project), "--out", str(tmp_path / "x.tsv"), "--queue", "nope"
    )
    assert bad.returncode != 0 and not (tmp_path / "x.tsv").exists()


def test_refuses_to_overwrite_without_force(tmp_path):
    project = make_project(tmp_path / "p.db", BASIC)
    out = tmp_path / "labeled.csv"
    out.write_text("precious\n")
    done = run_cli("reviews", "export", str(project), "--out", str(out))
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == f"annotator: error: {out}: already exists (use --force to replace it)"
    )
    assert out.read_text() == "precious\n"

    done = run_cli("reviews", "export", str(project), "--out", str(out), "--force")
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8").startswith("id,title,text,sentiment,quality\n")
    assert [
        p.name for p in tmp_path.iterdir() if p.name.startswith(".labeled.csv")
    ] == []  # no temp left


def test_bad_output_paths_are_one_line_errors(tmp_path):
    project = make_project(tmp_path / "p.db", BASIC)
    for out, message in [
        (tmp_path / "labels.txt", "unknown data format"),
        (tmp_path / "no" / "such" / "dir.csv", "cannot write"),
    ]:
        done = run_cli("reviews", "export", str(project), "--out", str(out))
        assert done.returncode == 1
        line = done.stderr.strip()
        assert "\n" not in line and str(out) in line and message in line
        assert "Traceback" not in done.stderr


def test_project_without_reviews_or_rubric(tmp_path):
    project = make_project(tmp_path / "p.db", {})
    out = tmp_path / "labeled.csv"
    done = run_cli("reviews", "export", str(project), "--out", str(out))
    assert done.returncode == 1
    assert done.stderr.strip() == f"annotator: error: {project}: no reviews to export"
    assert not out.exists()
    assert_no_text(done)

    empty = tmp_path / "empty.db"
    Store(empty).close()
    done = run_cli("reviews", "export", str(empty), "--out", str(out))
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == f"annotator: error: {empty}: project has no rubric yet (annotate first)"
    )
    assert not out.exists()
