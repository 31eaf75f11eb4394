"""Several processes on one project: atomic run start, claims with leases, --workers.

The engine tests use the real embedded model on the 40 short GoEmotions sample items."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES, annotation_count, hears_ctrl_c, run_cli

from annotator.jobs.workers import split_threads
from annotator.project.claims import worker_alive, worker_name
from annotator.project.store import Store
from annotator.rubric import load_rubric

ITEMS = SAMPLES / "goemotions" / "items.csv"
RUBRIC = SAMPLES / "goemotions" / "rubric.toml"
LONG_CTX = 1024  # a context whose one long item takes a few seconds


def _start_run(project: str, barrier, out) -> None:
    rubric = load_rubric(RUBRIC)
    with Store(project) as store:
        store.bind_rubric(rubric)
        barrier.wait()
        run_id, _ = store.find_or_start_run(
            model_path="m.gguf",
            model_sha256="ab" * 32,
            rubric=rubric,
            data_path="d.csv",
            data_sha256="cd" * 32,
            settings={"settings": {"n_ctx": 4096}, "backend": "cpu"},
        )
    out.put(run_id)


def test_same_run_key_started_at_once_makes_one_run(tmp_path):
    """Six processes on a new project start the same job at the same moment: one run."""
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(6), context.Queue()
    project = str(tmp_path / "p.db")
    procs = [context.Process(target=_start_run, args=(project, barrier, out)) for _ in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert {out.get(timeout=5) for _ in procs} == {1}
    with Store(project) as store:
        assert [r.id for r in store.runs()] == [1]


def _open_new_project(project: str, barrier, out) -> None:
    barrier.wait()
    with Store(project) as store:
        out.put(len(store.runs()))


def test_new_project_opened_by_many_processes_at_once(tmp_path):
    """Workers started together open (create and migrate) the same new project file at the
    same instant: none of them may fail with "database is locked"."""
    context = multiprocessing.get_context("spawn")
    for attempt in range(3):
        barrier, out = context.Barrier(8), context.Queue()
        project = str(tmp_path / f"p{attempt}.db")
        procs = [
            context.Process(target=_open_new_project, args=(project, barrier, out))
            for _ in range(8)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0] * 8
        assert [out.get(timeout=5) for _ in procs] == [0] * 8


def _store_with_run(path: Path, ids: list[str]) -> tuple[Store, int]:
    from annotator.data import Item

    rubric = load_rubric(RUBRIC)
    store = Store(path)
    store.bind_rubric(rubric)
    store.add_items([Item(i, n, {"text": f"text {i}"}) for n, i in enumerate(ids, 1)])
    run_id, _ = store.find_or_start_run(
        model_path="m.gguf",
        model_sha256="ab" * 32,
        rubric=rubric,
        data_path="d.csv",
        data_sha256="cd" * 32,
        settings={"settings": {}, "backend": "cpu"},
    )
    return store, run_id


def test_claims_lease_dead_worker_and_labelled_items(tmp_path):
    from annotator.project.store import Label

    store, run = _store_with_run(tmp_path / "p.db", ["a", "b", "c", "d"])
    me, other = worker_name(), worker_name()
    assert store.claim(run, me, ["a", "b"], lease=60) == (["a", "b"], [])
    # Another live worker (this very process, other name) cannot take them while they hold.
    assert store.claim(run, other, ["a", "b", "c"], lease=60) == (["c"], ["a", "b"])
    # A labelled item is never handed out again, whoever held it.
    store.save_annotation(run, "a", {"emotion": Label("joy", 0.9, 0.8)}, 3, 0, 0.1)
    assert store.claim(run, other, ["a"], lease=60) == ([], [])
    # A lapsed lease is taken over.
    assert store.claim(run, me, ["d"], lease=-1) == (["d"], [])
    assert store.claim(run, other, ["d"], lease=60) == (["d"], [])
    # A worker of this machine whose process is gone loses its claims at once.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"{worker_name().split(':')[0]}:{gone.pid}:00000000"
    assert not worker_alive(dead) and worker_alive(me)
    assert worker_alive(f"elsewhere:{gone.pid}:00000000")  # other hosts: only the lease counts
    store.release_claims(run, other)
    store.db.execute(
        "INSERT OR REPLACE INTO claims VALUES (?, 'c', ?, ?)", (run, dead, time.time() + 600)
    )
    assert store.claim(run, me, ["c"], lease=60) == (["c"], [])
    store.close()


def test_split_threads():
    assert split_threads(2, 2) == [1, 1]
    assert split_threads(5, 2) == [3, 2]
    assert split_threads(1, 3) == [1, 1, 1]


def test_workers_start_fresh_while_other_threads_run():
    """Forking a process with other threads running can copy a held lock into the child
    (the app runs its job in a thread): then the workers start as fresh interpreters."""
    import threading

    from annotator.jobs.workers import _process_context

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert _process_context().get_start_method() == "spawn"
    finally:
        stop.set()
        thread.join()
    if sys.platform == "linux" and threading.active_count() == 1:
        assert _process_context().get_start_method() == "fork"


def _labels(project: Path) -> dict[str, str]:
    """Every item's label, checking each item is labelled once across all runs of the
    project (not only once per run, which the primary key already guarantees) in one run."""
    db = sqlite3.connect(project)
    try:
        runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        twice = db.execute(
            "SELECT COUNT(*) FROM (SELECT item_id FROM annotations"
            " GROUP BY item_id HAVING COUNT(*) > 1)"
        ).fetchone()[0]
        rows = db.execute("SELECT item_id, labels FROM annotations").fetchall()
    finally:
        db.close()
    assert twice == 0, f"{twice} items labelled more than once"
    assert runs == 1, f"{runs} runs"
    return dict(rows)


def _items(folder: Path, n: int) -> tuple[Path, list[dict]]:
    """The first `n` sample items as a data file."""
    import csv

    with ITEMS.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))[:n]
    path = folder / "items.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(rows)
    return path, rows


def _run_group(commands: list[list[str]], timeout: float) -> list[tuple[int, str]]:
    """Start the commands together, each in its own process group; (exit code, stderr) each.
    A command still running after `timeout` seconds fails the test (its workers killed too)."""
    procs = [
        subprocess.Popen(
            c,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for c in commands
    ]
    deadline = time.monotonic() + timeout
    done = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.communicate()
            pytest.fail(f"still running after {timeout:.0f} s (waiting out a lease?)")
        done.append((proc.returncode, err))
    return done


@pytest.fixture(scope="module")
def reference(tmp_path_factory, default_model) -> dict[str, str]:
    """The 40 items labelled by one plain process: what every other way must reproduce."""
    project = tmp_path_factory.mktemp("ref") / "ref.db"
    done = run_cli("annotate", str(ITEMS), "--rubric", str(RUBRIC), "--project", str(project))
    assert done.returncode == 0, done.stderr
    labels = _labels(project)
    assert len(labels) == 40
    return labels


@pytest.mark.long
def test_concurrent_commands_one_killed_label_every_item_once(tmp_path, reference):
    """Three `annotate` commands on one project; one is SIGKILLed mid-run. The others take its
    claims: every item labelled exactly once, in one run, with the sequential labels."""
    project = tmp_path / "p.db"
    command = [
        sys.executable,
        "-m",
        "annotator",
        "annotate",
        str(ITEMS),
        "--rubric",
        str(RUBRIC),
        "--project",
        str(project),
        "--threads",
        "1",
    ]
    procs = [
        subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    deadline = time.monotonic() + 120
    while annotation_count(project) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    victim = procs[0]
    assert victim.poll() is None, "the victim finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for proc in procs[1:]:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "run 1" in err
    assert _labels(project) == reference


@pytest.mark.long
def test_workers_option_matches_sequential(tmp_path, reference):
    project = tmp_path / "p.db"
    done = run_cli(
        "annotate",
        str(ITEMS),
        "--rubric",
        str(RUBRIC),
        "--project",
        str(project),
        "--workers",
        "2",
        "--threads",
        "2",
    )
    assert done.returncode == 0, done.stderr
    assert "2 workers x 1, 1 thread(s)" in done.stderr
    assert "done 40 of 40 items (40 now, 0 before)" in done.stderr
    assert _labels(project) == reference
    # Rerun: everything is there, nothing is labelled again.
    again = run_cli(
        "annotate", str(ITEMS), "--rubric", str(RUBRIC), "--project", str(project), "--workers", "2"
    )
    assert again.returncode == 0, again.stderr
    assert "(0 now, 40 before)" in again.stderr


@pytest.mark.long
@pytest.mark.parametrize("how", [[], ["--workers", "2"]], ids=["one process", "two workers"])
def test_ctrl_c_stops_between_items_and_the_rerun_finishes(tmp_path, reference, how):
    """Ctrl-C in a terminal reaches the command's whole process group, mostly while llama.cpp
    computes: it stops with the interrupted line (no traceback), counts what it labelled, and
    the same command again finishes the run."""
    import re

    project = tmp_path / "p.db"
    command = [
        sys.executable,
        "-m",
        "annotator",
        "annotate",
        str(ITEMS),
        "--rubric",
        str(RUBRIC),
        "--project",
        str(project),
        "--threads",
        "2",
        *how,
    ]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=hears_ctrl_c,
    )
    deadline = time.monotonic() + 120
    while annotation_count(project) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: finished items are saved" in err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    done = re.search(r"done (\d+) of 40 items \((\d+) now, 0 before\)", err)
    assert done and done[1] == done[2] and 4 <= int(done[1]) < 40, err
    assert int(done[1]) == annotation_count(project)
    again = subprocess.run(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert _labels(project) == reference


@pytest.mark.long
def test_app_job_and_cli_on_one_project_at_once(tmp_path, reference):
    """The app drives a Job in its own process; a CLI runs beside it on the same project."""
    from annotator.inference.backend import EngineSettings
    from annotator.jobs.job import open_job

    project = tmp_path / "p.db"
    job = open_job(ITEMS, project, RUBRIC, settings=EngineSettings(n_threads=1))
    labelled = job.run()
    mine = [next(labelled)[0].id]  # the app has started and holds claims
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "annotator",
            "annotate",
            str(ITEMS),
            "--rubric",
            str(RUBRIC),
            "--project",
            str(project),
            "--threads",
            "1",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    deadline = time.monotonic() + 120  # the app is paused until the CLI has labelled some
    while annotation_count(project) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    mine += [item.id for item, _ in labelled]
    job.close()
    _, err = cli.communicate(timeout=300)
    assert cli.returncode == 0, err
    labels = _labels(project)
    assert labels == reference
    assert 0 < len(mine) < 40  # both did part of the work


@pytest.mark.long
@pytest.mark.parametrize("how", ["workers", "commands"])
def test_parallel_processes_on_one_project_never_wait_out_a_lease(tmp_path, how):
    """`--parallel` decodes several items at once, so a process holds claims on items it has
    not saved yet. `--workers 2 --parallel 4`, or two `--parallel 4` commands, on one project:
    each saves what it finished before it asks for more, so neither waits on items the other
    holds until their lease (300 s) runs out, and no item is labelled twice."""
    import re

    data, rows = _items(tmp_path, 16)
    project = tmp_path / "p.db"
    command = [
        sys.executable,
        "-m",
        "annotator",
        "annotate",
        str(data),
        "--rubric",
        str(RUBRIC),
        "--project",
        str(project),
        "--parallel",
        "4",
    ]
    if how == "workers":
        commands = [[*command, "--workers", "2", "--threads", "2"]]
    else:
        commands = [[*command, "--threads", "1"]] * 2
    now = 0
    for code, err in _run_group(commands, timeout=120):
        assert code == 0, err
        now += int(re.search(r"\((\d+) now, ", err)[1])
    assert now == 16  # the labelling work: an item labelled twice counts twice here
    assert set(_labels(project)) == {row["id"] for row in rows}


@pytest.mark.long
def test_a_working_job_keeps_its_claim_past_the_lease(tmp_path):
    """Claims are renewed while a job works, not only when it claims more: another live
    process that tries all along to take the item the job is labelling never gets it, though
    the item takes longer than several leases."""
    import csv
    import threading

    from annotator.inference.backend import EngineSettings
    from annotator.jobs.job import open_job

    with ITEMS.open(encoding="utf-8", newline="") as handle:
        text = " ".join(row["text"] for row in csv.DictReader(handle))
    data = tmp_path / "long.csv"
    with data.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["id", "text"], ["long", " ".join([text] * 4)]])
    project = tmp_path / "p.db"
    job = open_job(data, project, RUBRIC, settings=EngineSettings(n_threads=1, n_ctx=LONG_CTX))
    job.lease = 0.5
    stolen: list[str] = []
    stop = threading.Event()

    def take_over() -> None:
        other = worker_name()
        with Store(project) as store:
            while not stop.is_set():
                mine = [
                    r[0]
                    for r in store.db.execute(
                        "SELECT item_id FROM claims WHERE worker = ?", (job.worker,)
                    )
                ]
                stolen.extend(store.claim(job.run_id, other, mine, lease=60)[0])
                time.sleep(0.05)

    thief = threading.Thread(target=take_over)
    thief.start()
    started = time.monotonic()
    try:
        done = [item.id for item, _ in job.run()]
    finally:
        took = time.monotonic() - started
        stop.set()
        thief.join()
        job.close()
    assert took > 3 * job.lease, f"the item took {took:.1f} s: too short to show anything"
    assert stolen == []
    assert done == ["long"]


def _refusing(project: Path, when: str = "1") -> None:
    """A project whose database refuses to store labels (`when`: an SQL condition on NEW)."""
    with Store(project) as store:
        store.db.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON annotations WHEN {when}"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )


@pytest.mark.long
def test_workers_that_all_fail_exit_non_zero_with_one_line_each(tmp_path):
    """Every worker fails while labelling (its database refuses the labels): no traceback, one
    line per worker that names no item nor path, and the command fails."""
    data, rows = _items(tmp_path, 6)
    project = tmp_path / "p.db"
    _refusing(project)
    done = run_cli(
        "annotate",
        str(data),
        "--rubric",
        str(RUBRIC),
        "--project",
        str(project),
        "--workers",
        "2",
        "--threads",
        "2",
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line.strip() for line in done.stderr.splitlines()]
    assert sorted(line for line in lines if line.startswith("worker ")) == [
        "worker 1 failed: SQLite: refused by the test",
        "worker 2 failed: SQLite: refused by the test",
    ], done.stderr
    assert lines[-1].startswith("annotator: error: 2 of 2 workers failed"), done.stderr
    assert str(tmp_path) not in done.stderr
    for row in rows:
        assert row["id"] not in done.stderr and row["text"] not in done.stderr


@pytest.mark.long
def test_a_failed_worker_whose_items_another_finished(tmp_path):
    """One worker fails on its first item (the database refuses it while fewer than 8 items are
    stored); the other labels everything: exit 0, one line for the failed worker, no
    traceback, each item labelled once."""
    data, rows = _items(tmp_path, 24)
    project = tmp_path / "p.db"
    first = rows[0]["id"]  # worker 1 starts there; worker 2 gets to it after 12 items
    _refusing(project, f"NEW.item_id = '{first}' AND (SELECT COUNT(*) FROM annotations) < 8")
    done = run_cli(
        "annotate",
        str(data),
        "--rubric",
        str(RUBRIC),
        "--project",
        str(project),
        "--workers",
        "2",
        "--threads",
        "2",
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    failed = [line.strip() for line in done.stderr.splitlines() if "failed" in line]
    assert failed == [
        "worker 1 failed: SQLite: refused by the test; the other workers finished its items"
    ], done.stderr
    assert set(_labels(project)) == {row["id"] for row in rows}
