"""Migration m002: reviews keyed by (item, dimension, reviewer, queue).

A reviewer may now hold a hard-queue review (perhaps not blind) and a blind audit review of the
same item; alpha counts only the audit (or imported) one, once. Old (m001) project files are
built here the way `Store` built them before m002 existed, and must open and migrate with every
row kept; a migration that fails or is killed half-way must leave the old table as it was.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ROOT

from annotator.data import Item
from annotator.project.migrations import MIGRATIONS, m001_initial
from annotator.project.reviews import agreement_report, export_reviews
from annotator.project.store import Label, Store
from annotator.rubric import rubric_from_dict

RUBRIC = rubric_from_dict(
    {
        "name": "m002",
        "instructions": "Label the text.",
        "inputs": [{"column": "text"}],
        "dimensions": [
            {
                "name": "sentiment",
                "question": "Which?",
                "scale": "nominal",
                "values": ["positive", "negative", "mixed"],
            }
        ],
    },
    "test",
)
MODEL = ["positive", "negative", "mixed", "positive", "negative", "mixed"]  # items i0..i5

# What an m001 project holds: (item id, dimension, reviewer, value JSON, queue, created_at).
OLD_REVIEWS = [
    ("i0", "sentiment", "alice", '"positive"', "audit", 1000.5),
    ("i1", "sentiment", "alice", '"negative"', "hard", 1001.25),
    ("i1", "sentiment", "bob", '"mixed"', "import", 1002.0),
    ("i2", "sentiment", "bob", '"mixed"', "audit", 1003.75),
]


def m001_project(path) -> None:
    """A project file as Store made it with only m001: `_migrations`, m001 in one transaction
    with its row, then items and reviews (raw SQL: the old table has no queue in its key)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    db.execute("BEGIN IMMEDIATE")
    m001_initial(db)
    db.execute("INSERT INTO _migrations VALUES ('m001_initial', 999.0)")
    db.execute("INSERT INTO project VALUES ('rubric', ?)", (RUBRIC.canonical_json(),))
    db.executemany(
        "INSERT INTO items VALUES (?, ?, ?)",
        [(f"i{n}", n, json.dumps({"text": f"text {n}"})) for n in range(len(MODEL))],
    )
    db.executemany("INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?)", OLD_REVIEWS)
    db.execute("COMMIT")
    db.close()


def reviews_key(db: sqlite3.Connection) -> list[str]:
    """The reviews table's primary key columns, in key order."""
    rows = db.execute("PRAGMA table_info(reviews)").fetchall()
    return [r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5])]


def raw_reviews(db: sqlite3.Connection) -> list[tuple]:
    return db.execute(
        "SELECT item_id, dimension, reviewer, value, queue, created_at FROM reviews"
        " ORDER BY item_id, reviewer"
    ).fetchall()


def applied(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")]


def test_an_m001_project_migrates_with_every_review_kept(tmp_path):
    path = tmp_path / "old.db"
    m001_project(path)
    with sqlite3.connect(path) as db:
        assert reviews_key(db) == ["item_id", "dimension", "reviewer"]  # really the old schema
    with Store(path) as store:
        assert reviews_key(store.db) == ["item_id", "dimension", "reviewer", "queue"]
        assert raw_reviews(store.db) == OLD_REVIEWS  # values, queues and times as they were
        assert applied(store.db) == sorted(m.__name__ for m in MIGRATIONS)
        assert applied(store.db)[:2] == ["m001_initial", "m002_reviews_keyed_by_queue"]
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert store.rubric().hash == RUBRIC.hash and len(store.item_ids()) == len(MODEL)
        assert [r[:5] for r in store.timed_reviews()] == store.reviews()
        assert store.reviews("hard") == [("i1", "sentiment", "alice", "negative", "hard")]
        # Only the reviews table was rebuilt: no copy left behind.
        tables = {
            r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        assert "reviews_m002" not in tables
    with Store(path) as store:  # opening again applies nothing again
        assert raw_reviews(store.db) == OLD_REVIEWS
        assert len(store.db.execute("SELECT * FROM _migrations").fetchall()) == len(MIGRATIONS)


def test_a_failed_migration_leaves_the_old_table_intact(tmp_path, monkeypatch):
    import annotator.project.migrations as migrations_module

    path = tmp_path / "old.db"
    m001_project(path)
    real = migrations_module.m002_reviews_keyed_by_queue

    def m002_reviews_keyed_by_queue(db):  # the whole rebuild, then a failure before the commit
        real(db)
        raise RuntimeError("power cut")

    monkeypatch.setattr(
        migrations_module, "MIGRATIONS", [m001_initial, m002_reviews_keyed_by_queue]
    )
    with pytest.raises(RuntimeError, match="power cut"):
        Store(path)
    with sqlite3.connect(path) as db:
        assert reviews_key(db) == ["item_id", "dimension", "reviewer"]
        assert raw_reviews(db) == OLD_REVIEWS
        assert applied(db) == ["m001_initial"]
    monkeypatch.undo()
    with Store(path) as store:  # and the next open migrates
        assert reviews_key(store.db)[-1] == "queue" and raw_reviews(store.db) == OLD_REVIEWS


KILLED_MID_MIGRATION = """
import pathlib, sys, time
import annotator.project.migrations as migrations
import annotator.project.store as store

real = migrations.MIGRATIONS[1]

def stalled(db):
    real(db)  # rebuilt, not committed
    pathlib.Path(sys.argv[2]).write_text("rebuilt")
    time.sleep(600)

stalled.__name__ = real.__name__
migrations.MIGRATIONS[1] = stalled
store.Store(sys.argv[1])
"""


def test_sigkill_mid_migration_leaves_the_old_table_intact(tmp_path):
    path, marker = tmp_path / "old.db", tmp_path / "rebuilt"
    m001_project(path)
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_MID_MIGRATION), str(path), str(marker)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the migration never ran"
            time.sleep(0.02)
    finally:
        child.kill()  # SIGKILL, unless it has already exited
        child.wait()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert reviews_key(db) == ["item_id", "dimension", "reviewer"]
        assert raw_reviews(db) == OLD_REVIEWS and applied(db) == ["m001_initial"]
    with Store(path) as store:
        assert reviews_key(store.db)[-1] == "queue" and raw_reviews(store.db) == OLD_REVIEWS


def project(path) -> Store:
    """A new project: the rubric, items i0..i5 and a run whose labels are MODEL."""
    store = Store(path)
    store.bind_rubric(RUBRIC)
    store.add_items([Item(f"i{n}", n, {"text": f"text {n}"}) for n in range(len(MODEL))])
    run_id, _ = store.find_or_start_run(
        model_path="m.gguf",
        model_sha256="0" * 64,
        rubric=RUBRIC,
        data_path="d.csv",
        data_sha256="0",
        settings={},
    )
    for n, value in enumerate(MODEL):
        store.save_annotation(run_id, f"i{n}", {"sentiment": Label(value, 0.9, 0.5)}, 10, 0, 0.1)
    return store


def test_one_reviewer_holds_a_hard_and_an_audit_review_of_one_item(tmp_path):
    with project(tmp_path / "p.db") as store:
        assert store.save_reviews("alice", "hard", [("i3", "sentiment", "negative")]) == 1
        assert store.save_reviews("alice", "audit", [("i3", "sentiment", "positive")]) == 1
        assert store.reviews() == [
            ("i3", "sentiment", "alice", "positive", "audit"),
            ("i3", "sentiment", "alice", "negative", "hard"),
        ]
        hard_saved = store.timed_reviews("hard")[0][5]
        # A re-review in the same queue replaces that queue's review only.
        store.save_reviews("alice", "audit", [("i3", "sentiment", "mixed")])
        assert store.reviews() == [
            ("i3", "sentiment", "alice", "mixed", "audit"),
            ("i3", "sentiment", "alice", "negative", "hard"),
        ]
        assert store.timed_reviews("hard")[0][5] == hard_saved
        assert store.reviewers() == ["alice"]


def test_alpha_ignores_hard_reviews_and_counts_each_item_once(tmp_path):
    from annotator.tui.confusion import confusions

    with project(tmp_path / "p.db") as store:
        # alice agrees with the model on i0..i3 in the audit sample and on i4 by import; she
        # disagrees on i3 in the hard queue and on i0 in an import, and neither may count.
        store.save_reviews("alice", "audit", [(f"i{n}", "sentiment", MODEL[n]) for n in range(4)])
        store.save_reviews(
            "alice", "hard", [("i3", "sentiment", "negative"), ("i5", "sentiment", "positive")]
        )
        store.save_reviews(
            "alice", "import", [("i0", "sentiment", "negative"), ("i4", "sentiment", MODEL[4])]
        )
        report = agreement_report(store, bootstrap=0)
        model_vs_alice = report["dimensions"][0]["comparisons"][0]
        assert model_vs_alice["coders"] == ["model", "alice"]
        assert model_vs_alice["n"] == 5  # i0..i4, once each; i5 (hard only) not at all
        assert model_vs_alice["alpha"] == 1.0  # the audit label, then the import, never hard
        pairs = confusions(RUBRIC, store.annotations(report["run"]), store.reviews())[0]
        assert pairs.total == 5 and pairs.agreed == 5  # the agreement view's picture matches

        # Same report with the hard reviews gone: they had no part in it.
        store.db.execute("DELETE FROM reviews WHERE queue = 'hard'")
        without = agreement_report(store, bootstrap=0)
        # ... but for the count the report gives of what it left out.
        assert report.pop("items_by_queue")["hard"] == 1
        assert without.pop("items_by_queue")["hard"] == 0
        assert without == report


def test_export_takes_each_reviewers_latest_review_across_queues(tmp_path):
    with project(tmp_path / "p.db") as store:
        store.save_reviews(
            "alice", "hard", [("i1", "sentiment", "negative"), ("i2", "sentiment", "positive")]
        )
        store.save_reviews(
            "alice", "audit", [("i1", "sentiment", "mixed"), ("i2", "sentiment", "mixed")]
        )
        store.save_reviews("alice", "import", [("i2", "sentiment", "negative")])
        times = {"hard": 100.0, "audit": 200.0, "import": 300.0}
        for queue, saved in times.items():
            store.db.execute("UPDATE reviews SET created_at = ? WHERE queue = ?", (saved, queue))
        out = tmp_path / "all.jsonl"
        report = export_reviews(store, out)
        rows = {r["id"]: r["sentiment"] for r in map(json.loads, out.read_text().splitlines())}
        # One reviewer's two answers are not a conflict: the later one is written.
        assert rows == {"i1": "mixed", "i2": "negative"} and report.conflicts == 0

        # Saved at the same moment: the audit review.
        store.db.execute("UPDATE reviews SET created_at = 50.0")
        report = export_reviews(store, out, force=True)
        rows = {r["id"]: r["sentiment"] for r in map(json.loads, out.read_text().splitlines())}
        assert rows == {"i1": "mixed", "i2": "mixed"} and report.conflicts == 0

        # A queue asked for: that queue's reviews only, as before.
        export_reviews(store, out, queue="hard", force=True)
        rows = {r["id"]: r["sentiment"] for r in map(json.loads, out.read_text().splitlines())}
        assert rows == {"i1": "negative", "i2": "positive"}

        # Different reviewers who disagree are still a conflict (blank cell).
        store.save_reviews("bob", "audit", [("i1", "sentiment", "positive")])
        report = export_reviews(store, out, force=True)
        rows = {r["id"]: r["sentiment"] for r in map(json.loads, out.read_text().splitlines())}
        assert rows == {"i2": "mixed"} and report.conflicts == 1
