"""The project store: migrations, resume, and SIGKILL at any moment."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import ROOT, SAMPLES, annotation_count, write_csv

from annotator.project.migrations import MIGRATIONS
from annotator.project.store import Store
from bench.datasets import goemotions


def test_migrations_are_recorded_once(tmp_path):
    path = tmp_path / "p.db"
    Store(path).close()
    Store(path).close()
    db = sqlite3.connect(path)
    names = [r[0] for r in db.execute("SELECT name FROM _migrations")]
    assert names == [m.__name__ for m in MIGRATIONS]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_not_a_project_file(tmp_path):
    import pytest

    from annotator.errors import AnnotatorError

    bogus = tmp_path / "p.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AnnotatorError, match="p.db: not a project file"):
        Store(bogus)


@pytest.mark.long
def test_sigkill_mid_run_loses_nothing_and_duplicates_nothing(tmp_path, default_model):
    rows = goemotions(160)
    data = write_csv(tmp_path / "items.csv", rows, ["id", "text"])
    project = tmp_path / "p.db"
    cmd = [
        sys.executable,
        "-m",
        "annotator",
        "annotate",
        str(data),
        "--project",
        str(project),
        "--rubric",
        str(SAMPLES / "goemotions" / "rubric.toml"),
        "--model",
        str(default_model),
    ]
    rng = random.Random(3)
    counts = [0]
    for _ in range(4):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill only once this process has saved something, at a random moment after that
        # (a loaded machine is slow to start; a fixed delay could kill before any work).
        deadline = time.monotonic() + 120
        while annotation_count(project) <= counts[-1] and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with sqlite3.connect(project) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts.append(annotation_count(project))
    assert counts == sorted(counts) and 0 < counts[-1] < len(rows), counts
    finished = subprocess.run(
        cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stderr
    with sqlite3.connect(project) as db:
        ids = [r[0] for r in db.execute("SELECT item_id FROM annotations")]
        runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
    assert sorted(ids) == sorted(r["id"] for r in rows)  # every item exactly once
    assert runs == 1  # every restart resumed the same run
    assert f"({len(rows) - counts[-1]} now, {counts[-1]} before)" in finished.stderr
