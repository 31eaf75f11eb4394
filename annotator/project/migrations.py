"""The project file's schema, as an explicit ordered list of migrations.

Each migration is a small function applied once, in the order of `MIGRATIONS`, in one write
transaction together with its row in the `_migrations` table (its function name and when it
was applied), so a crash mid-migration leaves the file as it was before it. A project file
records the names it has, so a name never changes and a new migration goes at the end.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from annotator.project.run_keys import machine_facts, rekeyed

if TYPE_CHECKING:
    from annotator.project.store import Store

Migration = Callable[[sqlite3.Connection], None]


def m001_initial(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE project (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at REAL NOT NULL,
            model_path TEXT NOT NULL,
            model_sha256 TEXT NOT NULL,
            rubric_hash TEXT NOT NULL,
            data_path TEXT NOT NULL,
            data_sha256 TEXT NOT NULL,
            settings TEXT NOT NULL,      -- JSON: engine settings, backend, versions
            run_key TEXT NOT NULL        -- what must match for a rerun to resume this run
        );
        CREATE INDEX runs_key ON runs (run_key);
        CREATE TABLE items (
            id TEXT PRIMARY KEY,
            row INTEGER NOT NULL,
            fields TEXT NOT NULL         -- JSON object: column -> text
        );
        CREATE TABLE skipped (
            run_id INTEGER NOT NULL REFERENCES runs (id),
            row INTEGER NOT NULL,
            item_id TEXT,
            reason TEXT NOT NULL,
            PRIMARY KEY (run_id, row)
        );
        CREATE TABLE annotations (
            run_id INTEGER NOT NULL REFERENCES runs (id),
            item_id TEXT NOT NULL REFERENCES items (id),
            labels TEXT NOT NULL,        -- JSON: dimension -> [value, prob, margin]
            n_tokens INTEGER NOT NULL,
            truncated_tokens INTEGER NOT NULL,
            seconds REAL NOT NULL,
            PRIMARY KEY (run_id, item_id)
        );
        CREATE TABLE reviews (
            item_id TEXT NOT NULL REFERENCES items (id),
            dimension TEXT NOT NULL,
            reviewer TEXT NOT NULL,
            value TEXT NOT NULL,         -- JSON scalar
            queue TEXT NOT NULL,         -- audit (random sample) | hard (low margin) | import
            created_at REAL NOT NULL,
            PRIMARY KEY (item_id, dimension, reviewer)
        );
        """,
    )


def m002_reviews_keyed_by_queue(db: sqlite3.Connection) -> None:
    """Key reviews by queue too: one reviewer may hold a hard-queue review (maybe not blind)
    and a blind audit review of the same item, and only the audit one counts for alpha.

    SQLite cannot change a primary key in place: a new table, every row copied, the old one
    dropped and the new one renamed, all in the migration's transaction."""
    _run_script(
        db,
        """
        CREATE TABLE reviews_m002 (
            item_id TEXT NOT NULL REFERENCES items (id),
            dimension TEXT NOT NULL,
            reviewer TEXT NOT NULL,
            value TEXT NOT NULL,         -- JSON scalar
            queue TEXT NOT NULL,         -- audit (random sample) | hard (low margin) | import
            created_at REAL NOT NULL,    -- when saved (a re-review in the same queue: its time)
            PRIMARY KEY (item_id, dimension, reviewer, queue)
        );
        INSERT INTO reviews_m002 (item_id, dimension, reviewer, value, queue, created_at)
            SELECT item_id, dimension, reviewer, value, queue, created_at FROM reviews;
        DROP TABLE reviews;
        ALTER TABLE reviews_m002 RENAME TO reviews
        """,
    )


def m003_answer_distributions(db: sqlite3.Connection) -> None:
    """Keep what the model's pass gave, not only the label: every allowed value's probability
    (`probs`, JSON: dimension -> list in rubric order) and the hidden state at each decision
    (`hidden`, float16 bytes, dimensions x n_embd), so a decision rule or a calibration head
    can be applied to a project without running the model again. Rows from before stay NULL."""
    db.execute("ALTER TABLE annotations ADD COLUMN probs TEXT")
    db.execute("ALTER TABLE annotations ADD COLUMN hidden BLOB")


def m004_claims(db: sqlite3.Connection) -> None:
    """Claims of items by the processes labelling a run (see Store.claim)."""
    _run_script(
        db,
        """
        CREATE TABLE claims (
            run_id INTEGER NOT NULL REFERENCES runs (id),
            item_id TEXT NOT NULL,
            worker TEXT NOT NULL,        -- host:pid:random of the claiming process
            expires_at REAL NOT NULL,    -- unix time the lease runs out
            PRIMARY KEY (run_id, item_id)
        );
        CREATE INDEX claims_worker ON claims (run_id, worker)
        """,
    )


def m005_run_machines(db: sqlite3.Connection) -> None:
    """Runs keyed without per-machine facts; those go to `run_machines`, one row per run and
    distinct set (see `run_keys.run_key`). Existing runs get their new key and their machine's row, so
    a rerun on the same machine resumes its run as before."""
    _run_script(
        db,
        """
        CREATE TABLE run_machines (
            run_id INTEGER NOT NULL REFERENCES runs (id),
            source TEXT NOT NULL,        -- '': a process on this project, else the merged file
            facts TEXT NOT NULL,         -- JSON: machine_facts()
            recorded_at REAL NOT NULL,
            PRIMARY KEY (run_id, source, facts)
        )
        """,
    )
    runs = db.execute("SELECT id, started_at, settings, run_key FROM runs ORDER BY id").fetchall()
    for run_id, started_at, settings, key in runs:
        facts = machine_facts(json.loads(settings))
        db.execute(
            "INSERT OR IGNORE INTO run_machines VALUES (?, '', ?, ?)",
            (run_id, json.dumps(facts, sort_keys=True), started_at),
        )
        if rekeyed(key) != key:
            db.execute("UPDATE runs SET run_key = ? WHERE id = ?", (rekeyed(key), run_id))


MIGRATIONS: list[Migration] = [
    m001_initial,
    m002_reviews_keyed_by_queue,
    m003_answer_distributions,
    m004_claims,
    m005_run_machines,
]


def migrate(store: Store) -> None:
    """Apply the migrations `store`'s file lacks, in order, each in its own transaction."""
    store.db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)"
    )
    done = {row[0] for row in store.db.execute("SELECT name FROM _migrations")}
    for fn in MIGRATIONS:
        if fn.__name__ not in done:
            with store.transaction() as db:
                # Read again under the write lock: another process opening the same
                # project may have applied it since.
                if db.execute(
                    "SELECT 1 FROM _migrations WHERE name = ?", (fn.__name__,)
                ).fetchone():
                    continue
                fn(db)
                db.execute("INSERT INTO _migrations VALUES (?, ?)", (fn.__name__, time.time()))


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # Statement by statement: executescript() would commit the migration's transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
