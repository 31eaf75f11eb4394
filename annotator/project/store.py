"""The project store: one SQLite file per project.

WAL journal, synchronous=FULL and one transaction per item (all of its dimensions at once), so
a process killed at any moment loses at most the item in flight, and a primary key on
(run, item) makes a duplicate impossible. The schema evolves through the ordered list of
migrations in `annotator.project.migrations`, applied when a project is opened.

A project is tied to one rubric (its hash is fixed when the project is created); runs record
the model, its sha256, the engine settings, backend and library versions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from annotator.data import Item, Skipped
from annotator.errors import AnnotatorError
from annotator.project.claims import Claims
from annotator.project.migrations import migrate
from annotator.project.runs import Run, Runs
from annotator.rubric import Rubric, Value, rubric_from_json


@dataclass(frozen=True)
class Label:
    value: Value
    prob: float
    margin: float


@dataclass(frozen=True)
class Output:
    """An item's stored model outputs (NULL for rows written before m003)."""

    item_id: str
    labels: dict[str, Label]
    probs: dict[str, list[float]] | None
    hidden: bytes | None  # float16, dimensions x n_embd
    n_tokens: int
    truncated_tokens: int
    seconds: float


_INSERT_ANNOTATION = (
    "INSERT OR IGNORE INTO annotations (run_id, item_id, labels, n_tokens, truncated_tokens,"
    " seconds, probs, hidden) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _annotation_row(
    run_id: int,
    item_id: str,
    labels: dict[str, Label],
    n_tokens: int,
    truncated_tokens: int,
    seconds: float,
    probs: dict[str, list[float]] | None,
    hidden: bytes | None,
) -> tuple:
    payload = json.dumps({k: [v.value, v.prob, v.margin] for k, v in labels.items()})
    return (
        run_id,
        item_id,
        payload,
        n_tokens,
        truncated_tokens,
        seconds,
        None if probs is None else json.dumps(probs),
        hidden,
    )


OPEN_TIMEOUT = 30.0  # seconds to keep trying to open a project that other processes hold


class Store(Claims, Runs):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        deadline = time.monotonic() + OPEN_TIMEOUT
        for attempt in itertools.count(1):
            try:
                self.db = self._open()
                return
            except sqlite3.OperationalError as exc:
                # Processes that create the same new project at once (workers started
                # together) race to switch it to WAL and migrate it; SQLite answers some of
                # them "locked" at once, without waiting on its busy timeout. Try again.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise AnnotatorError(f"{self.path}: not a project file ({exc})") from exc
                time.sleep(min(0.5, 0.01 * attempt))
            except sqlite3.DatabaseError as exc:
                raise AnnotatorError(f"{self.path}: not a project file ({exc})") from exc

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self.db = db
            migrate(self)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- the project's rubric ---------------------------------------------------------------

    def rubric(self) -> Rubric | None:
        row = self.db.execute("SELECT value FROM project WHERE key = 'rubric'").fetchone()
        return rubric_from_json(row[0], f"{self.path} [rubric]") if row else None

    def bind_rubric(self, rubric: Rubric) -> None:
        """Tie the project to `rubric`; refuse a different rubric for an existing project."""
        existing = self.rubric()
        if existing is None:
            # OR IGNORE: another process may bind the same new project at the same moment;
            # whichever rubric won is then compared below.
            with self.transaction() as db:
                db.execute(
                    "INSERT OR IGNORE INTO project VALUES ('rubric', ?)", (rubric.canonical_json(),)
                )
            existing = self.rubric()
        if existing is not None and existing.hash != rubric.hash:
            raise AnnotatorError(
                f"{self.path}: project uses rubric {existing.name!r} ({existing.hash[:12]}), "
                f"not {rubric.name!r} ({rubric.hash[:12]}); use a new project file"
            )

    # -- runs: inherited from `Runs` (annotator.project.runs) ---------------------------------

    # -- items and annotations --------------------------------------------------------------

    def add_items(self, items: Iterable[Item]) -> list[Skipped]:
        """Store items; an id already stored with different text is reported, not replaced."""
        conflicts: list[Skipped] = []
        with self.transaction() as db:
            for item in items:
                fields = json.dumps(item.fields, sort_keys=True, ensure_ascii=False)
                row = db.execute("SELECT fields FROM items WHERE id = ?", (item.id,)).fetchone()
                if row is None:
                    db.execute("INSERT INTO items VALUES (?, ?, ?)", (item.id, item.row, fields))
                elif row[0] != fields:
                    conflicts.append(
                        Skipped(item.row, item.id, "id already in the project with other text")
                    )
        return conflicts

    def record_skipped(self, run_id: int, skipped: Iterable[Skipped]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)",
                [(run_id, s.row, s.id, s.reason) for s in skipped],
            )

    def skipped(self, run_id: int) -> list[Skipped]:
        rows = self.db.execute(
            "SELECT row, item_id, reason FROM skipped WHERE run_id = ? ORDER BY row", (run_id,)
        )
        return [Skipped(r[0], r[1], r[2]) for r in rows]

    def done_ids(self, run_id: int) -> set[str]:
        rows = self.db.execute("SELECT item_id FROM annotations WHERE run_id = ?", (run_id,))
        return {r[0] for r in rows}

    def save_annotation(
        self,
        run_id: int,
        item_id: str,
        labels: dict[str, Label],
        n_tokens: int,
        truncated_tokens: int,
        seconds: float,
        probs: dict[str, list[float]] | None = None,
        hidden: bytes | None = None,
        worker: str | None = None,
        lease: float = 0.0,
    ) -> None:
        """Store an item's labels. `worker`: the claim holder saving it; in the same
        transaction its claim on the item goes (a labelled item needs none) and its other
        claims are renewed for `lease` seconds."""
        with self.transaction() as db:
            db.execute(
                _INSERT_ANNOTATION,
                _annotation_row(
                    run_id, item_id, labels, n_tokens, truncated_tokens, seconds, probs, hidden
                ),
            )
            if worker is not None:
                db.execute(
                    "DELETE FROM claims WHERE run_id = ? AND item_id = ? AND worker = ?",
                    (run_id, item_id, worker),
                )
                db.execute(
                    "UPDATE claims SET expires_at = ? WHERE run_id = ? AND worker = ?",
                    (time.time() + lease, run_id, worker),
                )

    def outputs(self, run_id: int) -> list[Output]:
        """Every item's stored outputs in the run, in the data file's row order."""
        rows = self.db.execute(
            "SELECT a.item_id, a.labels, a.probs, a.hidden, a.n_tokens, a.truncated_tokens,"
            " a.seconds FROM annotations a JOIN items i ON i.id = a.item_id WHERE a.run_id = ?"
            " ORDER BY i.row, i.id",
            (run_id,),
        )
        return [
            Output(
                r[0],
                {k: Label(*v) for k, v in json.loads(r[1]).items()},
                None if r[2] is None else json.loads(r[2]),
                r[3],
                r[4],
                r[5],
                r[6],
            )
            for r in rows
        ]

    def start_derived_run(
        self, parent: Run, settings: dict, relabelled: Iterable[Output], adopt: bool = True
    ) -> int:
        """A new run holding `parent`'s model outputs with new labels (a readout applied
        again, no model pass), written in one transaction. It is keyed by what it was read
        from: the parent run, the readout (with the reviews a head was fitted on) and the
        parent's labelled items, so a calibration after a resumed annotate makes a new run;
        the same derivation twice reuses its run. Either way it becomes the latest run; with
        `adopt` False the latest run stays what it was (the app asks first, `adopt_run`)."""
        relabelled = list(relabelled)
        items = hashlib.sha256(json.dumps(sorted(o.item_id for o in relabelled)).encode("utf-8"))
        key = json.dumps(
            ["derived", parent.id, settings.get("readout"), len(relabelled), items.hexdigest()],
            sort_keys=True,
        )
        with self.transaction() as db:
            row = db.execute(
                "SELECT id FROM runs WHERE run_key = ? ORDER BY id DESC LIMIT 1", (key,)
            ).fetchone()
            if row:
                if adopt:
                    self._mark_latest(db, int(row[0]))
                return int(row[0])
            current = self.runs()[-1].id  # the latest run before this one
            data_sha = db.execute(
                "SELECT data_sha256 FROM runs WHERE id = ?", (parent.id,)
            ).fetchone()[0]
            cursor = db.execute(
                "INSERT INTO runs (started_at, model_path, model_sha256, rubric_hash, data_path,"
                " data_sha256, settings, run_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    parent.model_path,
                    parent.model_sha256,
                    parent.rubric_hash,
                    parent.data_path,
                    data_sha,
                    json.dumps(settings, sort_keys=True),
                    key,
                ),
            )
            run_id = int(cursor.lastrowid or 0)
            db.executemany(
                _INSERT_ANNOTATION,
                [
                    _annotation_row(
                        run_id,
                        o.item_id,
                        o.labels,
                        o.n_tokens,
                        o.truncated_tokens,
                        o.seconds,
                        o.probs,
                        o.hidden,
                    )
                    for o in relabelled
                ],
            )
            db.execute(
                "INSERT INTO skipped SELECT ?, row, item_id, reason FROM skipped WHERE run_id = ?",
                (run_id, parent.id),
            )
            self._mark_latest(db, run_id if adopt else current)
            return run_id

    def annotations(self, run_id: int) -> list[tuple[str, dict[str, Label], int]]:
        """(item id, labels, truncated tokens) in the data file's row order."""
        rows = self.db.execute(
            "SELECT a.item_id, a.labels, a.truncated_tokens FROM annotations a"
            " JOIN items i ON i.id = a.item_id WHERE a.run_id = ? ORDER BY i.row, i.id",
            (run_id,),
        )
        return [(r[0], {k: Label(*v) for k, v in json.loads(r[1]).items()}, r[2]) for r in rows]

    def items(self) -> list[Item]:
        rows = self.db.execute("SELECT id, row, fields FROM items ORDER BY row, id")
        return [Item(r[0], r[1], json.loads(r[2])) for r in rows]

    def item_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT id FROM items")}

    # -- reviews ----------------------------------------------------------------------------

    def save_reviews(
        self, reviewer: str, queue: str, rows: Iterable[tuple[str, str, Value]]
    ) -> int:
        """Save (item id, dimension, value) reviews in one transaction.

        A review is kept per (item, dimension, reviewer, queue): a re-review in the same queue
        replaces the earlier one (and its time); reviews in other queues stay as they are."""
        now = time.time()
        with self.transaction() as db:
            cursor = db.executemany(
                "INSERT OR REPLACE INTO reviews (item_id, dimension, reviewer, value, queue,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(i, d, reviewer, json.dumps(v), queue, now) for i, d, v in rows],
            )
            return cursor.rowcount

    def reviews(self, queue: str | None = None) -> list[tuple[str, str, str, Value, str]]:
        """(item id, dimension, reviewer, value, queue) rows; one reviewer may have several
        for the same item and dimension, one per queue."""
        return [r[:5] for r in self.timed_reviews(queue)]

    def timed_reviews(
        self, queue: str | None = None
    ) -> list[tuple[str, str, str, Value, str, float]]:
        """`reviews()` with when each was saved: (item id, dimension, reviewer, value, queue,
        created_at) rows."""
        sql = "SELECT item_id, dimension, reviewer, value, queue, created_at FROM reviews"
        args: tuple = ()
        if queue is not None:
            sql += " WHERE queue = ?"
            args = (queue,)
        rows = self.db.execute(sql + " ORDER BY item_id, dimension, reviewer, queue", args)
        return [(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    def reviewers(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT reviewer FROM reviews ORDER BY 1")]

    # -- claims: inherited from `Claims` (annotator.project.claims) ---------------------------

    def annotated_count(self, run_id: int) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM annotations WHERE run_id = ?", (run_id,))
        return int(row.fetchone()[0])

    # -- a share's fixed model (annotator project split) ------------------------------------

    def fixed_model_sha256(self) -> str | None:
        row = self.db.execute("SELECT value FROM project WHERE key = 'model_sha256'").fetchone()
        return row[0] if row else None

    def fix_model_sha256(self, sha256: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO project VALUES ('model_sha256', ?)", (sha256,))

    def check_model(self, path: str | Path, sha256: str) -> None:
        """Refuse a model other than the one this project (a share) was made for."""
        fixed = self.fixed_model_sha256()
        if fixed is not None and fixed != sha256:
            raise AnnotatorError(
                f"{self.path}: this project is fixed to model sha256 {fixed[:12]}, "
                f"not {Path(path).name} ({sha256[:12]}); use that model file"
            )
