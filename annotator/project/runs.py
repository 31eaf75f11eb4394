"""A project's runs: starting or resuming one (keyed by `run_keys.run_key`), the machines that
labelled in it, and which run is the latest, the one `results`, `agree` and the app show
(the newest, or the derived run `calibrate` made or the app adopted since: `adopt_run`).

`Runs` holds these methods of `Store`, which inherits them and provides the connection.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from annotator.errors import AnnotatorError
from annotator.project.run_keys import machine_facts, run_key
from annotator.rubric import Rubric


@dataclass(frozen=True)
class Run:
    id: int
    started_at: float
    model_path: str
    model_sha256: str
    rubric_hash: str
    data_path: str
    settings: dict


class Runs:
    """The run methods of `Store`."""

    path: Path
    db: sqlite3.Connection
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def find_or_start_run(
        self,
        *,
        model_path: str,
        model_sha256: str,
        rubric: Rubric,
        data_path: str,
        data_sha256: str,
        settings: dict,
    ) -> tuple[int, bool]:
        """(run id, resumed): a run with the same model, rubric, engine settings and readout
        is resumed, on this machine or any other (see `run_key`). The machine's own facts
        (`machine_facts`: backend, versions, content-free priors...) are recorded with the
        run in `run_machines`, once per distinct set; the run's settings keep the first's."""
        key = run_key(model_sha256, rubric.hash, settings)
        facts = json.dumps(machine_facts(settings), sort_keys=True)
        # Read and insert in one write transaction: two processes starting the same job at
        # once must end up in the same run, never in two.
        with self.transaction() as db:
            row = db.execute(
                "SELECT id FROM runs WHERE run_key = ? ORDER BY id DESC LIMIT 1", (key,)
            ).fetchone()
            if row:
                run_id, resumed = int(row[0]), True
            else:
                cursor = db.execute(
                    "INSERT INTO runs (started_at, model_path, model_sha256, rubric_hash,"
                    " data_path, data_sha256, settings, run_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        time.time(),
                        model_path,
                        model_sha256,
                        rubric.hash,
                        data_path,
                        data_sha256,
                        json.dumps(settings, sort_keys=True),
                        key,
                    ),
                )
                run_id, resumed = int(cursor.lastrowid or 0), False
            db.execute(
                "INSERT OR IGNORE INTO run_machines VALUES (?, '', ?, ?)",
                (run_id, facts, time.time()),
            )
            return run_id, resumed

    def run_machines(self, run_id: int) -> list[tuple[str, dict]]:
        """(source, facts) of every machine that labelled in the run, first recorded first:
        source is '' for processes that wrote to this project, else the name of the project
        file a merge brought them from (`annotator project merge`)."""
        rows = self.db.execute(
            "SELECT source, facts FROM run_machines WHERE run_id = ?"
            " ORDER BY recorded_at, source, facts",
            (run_id,),
        )
        return [(r[0], json.loads(r[1])) for r in rows]

    def runs(self) -> list[Run]:
        """Every run in id order, except that the latest (`run()`) comes last."""
        rows = self.db.execute(
            "SELECT id, started_at, model_path, model_sha256, rubric_hash, data_path, settings"
            " FROM runs ORDER BY id"
        ).fetchall()
        runs = [Run(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]
        latest = self._latest(runs)
        return [r for r in runs if r is not latest] + ([latest] if latest else [])

    def _latest(self, runs: list[Run]) -> Run | None:
        """The run that `results`, `agree` and the app show by default: the derived run that
        `calibrate` made or reused last, unless a run was added since; else the newest run.
        Never a stale derived run (one without some of its parent's items)."""
        by_id = {r.id: r for r in runs}
        row = self.db.execute("SELECT value FROM project WHERE key = 'latest_run'").fetchone()
        if row and runs:
            chosen, newest = json.loads(row[0])
            if newest == runs[-1].id and chosen in by_id and not self.stale(by_id[chosen], by_id):
                return by_id[chosen]
        return next(
            (r for r in reversed(runs) if not self.stale(r, by_id)), runs[-1] if runs else None
        )

    def stale(self, run: Run, by_id: dict[int, Run] | None = None) -> bool:
        """A derived run (`calibrate`) whose parent has labelled items since (a resumed
        annotate), or whose parent is stale: it holds only part of what it was read from."""
        parent = (run.settings.get("readout") or {}).get("derived_from")
        if not isinstance(parent, int) or isinstance(parent, bool) or not parent < run.id:
            return False
        missing = self.db.execute(
            "SELECT 1 FROM annotations p WHERE p.run_id = ? AND NOT EXISTS (SELECT 1 FROM"
            " annotations d WHERE d.run_id = ? AND d.item_id = p.item_id) LIMIT 1",
            (parent, run.id),
        ).fetchone()
        if missing:
            return True
        if by_id is None:
            by_id = {r.id: r for r in self.runs()}
        return parent in by_id and self.stale(by_id[parent], by_id)

    def run(self, run_id: int | None = None) -> Run:
        """The run asked for, or the latest one (see `_latest`)."""
        runs = self.runs()
        if not runs:
            raise AnnotatorError(f"{self.path}: no annotation run yet (run `annotator annotate`)")
        if run_id is None:
            return runs[-1]
        for run in runs:
            if run.id == run_id:
                return run
        raise AnnotatorError(
            f"{self.path}: no run {run_id} (runs: {', '.join(str(r.id) for r in runs)})"
        )

    def adopt_run(self, run_id: int) -> Run:
        """Make run `run_id` the latest (what `results`, `agree` and the app show) until
        another run is added; a stale derived run cannot be (see `stale`)."""
        with self.transaction() as db:
            run = self.run(run_id)
            if self.stale(run):
                raise AnnotatorError(
                    f"{self.path}: run {run_id} was read from a run that has labelled items "
                    "since; calibrate again"
                )
            self._mark_latest(db, run_id)
        return run

    @staticmethod
    def _mark_latest(db: sqlite3.Connection, run_id: int) -> None:
        """`run_id` is the latest run until another run is added (see `_latest`)."""
        newest = db.execute("SELECT MAX(id) FROM runs").fetchone()[0]
        db.execute(
            "INSERT OR REPLACE INTO project VALUES ('latest_run', ?)",
            (json.dumps([run_id, newest]),),
        )
