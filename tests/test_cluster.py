"""Labelling on a real local Ray cluster started by the test (`ray start --head`)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SAMPLES, annotation_count, hears_ctrl_c, import_extra, run_cli

# The [cluster] extra, which `make test` installs: skipped only where it is not installed.
ray = import_extra("ray", "ray")
import_extra("pyarrow", "pyarrow")

from annotator.data import Item, read_items  # noqa: E402
from annotator.errors import AnnotatorError  # noqa: E402
from annotator.inference.backend import EngineSettings  # noqa: E402
from annotator.jobs.cluster import annotate_on_ray  # noqa: E402
from annotator.jobs.stream import stream_items  # noqa: E402
from annotator.modelfile import sha256_file  # noqa: E402
from annotator.rubric import load_rubric  # noqa: E402

ITEMS = SAMPLES / "goemotions" / "items.csv"
RUBRIC = SAMPLES / "goemotions" / "rubric.toml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Ray cluster as `ray start --head` makes it, on localhost only."""
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    # A throwaway cluster on this machine for one test session: no token (a real cluster
    # keeps Ray's token authentication on, see the README).
    os.environ["RAY_AUTH_MODE"] = "disabled"
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--temp-dir",
            str(temp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        yield address
    finally:
        os.environ.pop("RAY_AUTH_MODE", None)
        if ray.is_initialized():
            ray.shutdown()
        os.killpg(head.pid, signal.SIGTERM)  # the head and the processes it started
        try:
            head.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, default_model):
    project = tmp_path_factory.mktemp("ref") / "ref.db"
    done = run_cli("annotate", str(ITEMS), "--rubric", str(RUBRIC), "--project", str(project))
    assert done.returncode == 0, done.stderr
    return _labels(project)


def _labels(project: Path) -> dict[str, str]:
    db = sqlite3.connect(project)
    try:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
        rows = db.execute("SELECT item_id, labels FROM annotations").fetchall()
    finally:
        db.close()
    return dict(rows)


def test_stream_items_reads_like_read_items(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, items, skipped = read_items(ITEMS, ["text"])
    streamed = list(stream_items(ITEMS, ["text"], "id", False))
    assert [s for s in streamed if isinstance(s, Item)] == items
    assert [s for s in streamed if not isinstance(s, Item)] == skipped
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "x"}\n\n[1]\n{"id": "a", "text": "y"}\n')
    assert [str(s) for s in stream_items(bad, ["text"], "id", False)] == [
        str(s) for s in (*read_items(bad, ["text"])[1], *read_items(bad, ["text"])[2])
    ]
    table = pa.table({"id": [i.id for i in items], "text": [i.fields["text"] for i in items]})
    pq.write_table(table, tmp_path / "items.parquet", row_group_size=7)
    assert list(stream_items(tmp_path / "items.parquet", ["text"], "id", False)) == items


def test_blocks_share_a_small_file_among_the_actors(tmp_path):
    """Fewer items than SHARE full blocks per actor: smaller blocks, at least SHARE per actor,
    so no actor idles while another holds every item; a large file goes in blocks of BLOCK."""
    from annotator.jobs.cluster import BLOCK, SHARE, ClusterRun, _blocks
    from annotator.jobs.job import Summary
    from annotator.project.store import Store

    def sizes(n: int, actors: int) -> list[int]:
        items = [Item(id=f"i{k}", row=k + 2, fields={"text": f"t{k}"}) for k in range(n)]
        with Store(tmp_path / f"{n}-{actors}.db") as store:
            run = ClusterRun(1, False, actors, [], Summary(), [], {}, [])
            return [len(b) for b in _blocks(iter(items), store, run, set())]

    assert SHARE == 4 and BLOCK == 16
    assert sizes(12, 2) == [2] * 6
    assert sizes(20, 2) == [3] * 6 + [2]
    assert sizes(3, 8) == [1, 1, 1]
    assert sizes(BLOCK * 8 + 3, 2) == [BLOCK] * 8 + [1, 1, 1]


@pytest.mark.long
def test_ray_run_with_a_killed_actor_labels_like_the_engine(
    tmp_path, cluster, reference, default_model, monkeypatch
):
    """Two actors; one is SIGKILLed after the first labels. Ray restarts it and retries its
    blocks: every item once, one run, labels identical to the sequential engine."""
    import annotator.jobs.cluster

    monkeypatch.setattr(annotator.jobs.cluster, "BLOCK", 4)  # 16 blocks: the victim has work queued
    project = tmp_path / "p.db"
    killed = []

    def progress(total, what, rate_unit=None):
        from contextlib import contextmanager

        @contextmanager
        def bar():
            def advance(*_):
                if not killed:
                    _, pid = started[0].pids[1]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

            yield advance

        return bar()

    started = []
    run = annotate_on_ray(
        ITEMS,
        project,
        load_rubric(RUBRIC),
        default_model,
        sha256_file(default_model),
        None,
        None,
        EngineSettings(n_threads=1),
        cluster,
        2,
        progress=progress,
        on_start=started.append,
    )
    assert killed and run.summary.done_now == 40
    assert _labels(project) == reference
    # Resumed: nothing is labelled again.
    done = run_cli(
        "annotate",
        str(ITEMS),
        "--rubric",
        str(RUBRIC),
        "--project",
        str(project),
        "--ray",
        cluster,
        "--actors",
        "1",
    )
    assert done.returncode == 0, done.stderr
    assert "(0 now, 40 before)" in done.stderr and "run 1 (resumed)" in done.stderr


class _Different:
    """A stand-in for `ray` whose actors describe themselves as given (node i, pid i): the
    driver's check of the actors against each other, without a cluster. The actors have no
    `label`: a driver that labels fails."""

    class exceptions:  # as ray.exceptions
        class RayActorError(Exception):
            pass

        class RayTaskError(Exception):
            pass

    def __init__(self, descriptions: list[dict]) -> None:
        self.descriptions, self.killed = descriptions, []

    def cluster_resources(self) -> dict:
        return {"CPU": len(self.descriptions)}

    def remote(self, **options):
        from types import SimpleNamespace

        started = iter(range(len(self.descriptions)))

        def actor(*args):
            n = next(started)
            return SimpleNamespace(
                n=n,
                describe=SimpleNamespace(
                    remote=lambda: {**self.descriptions[n], "node": f"node{n}", "pid": n}
                ),
            )

        return lambda cls: SimpleNamespace(remote=actor)

    def wait(self, refs, num_returns=1, timeout=None):
        return refs, []

    def get(self, refs):
        return refs

    def kill(self, actor, no_restart=True):
        self.killed.append(actor.n)


FACTS = {
    "backend": "cpu",
    "versions": {"annotator": "0.1.0", "llama-cpp-python": "0.3.36"},
    "settings": {"n_ctx": 4096},
}


def test_actors_that_differ_are_refused_before_any_item_is_labelled(
    tmp_path, monkeypatch, default_model
):
    import annotator.jobs.cluster

    other = {**FACTS, "versions": {**FACTS["versions"], "llama-cpp-python": "0.3.35"}}
    fake = _Different([FACTS, FACTS, other])
    monkeypatch.setattr(annotator.jobs.cluster, "connect", lambda address: fake)
    project = tmp_path / "p.db"
    with pytest.raises(AnnotatorError) as refused:
        annotate_on_ray(
            ITEMS,
            project,
            load_rubric(RUBRIC),
            default_model,
            "0" * 64,
            None,
            None,
            EngineSettings(n_threads=1),
            "auto",
            3,
        )
    assert str(refused.value) == (
        "Ray actor 2 on node2 differs from actor 0 on node0: versions.llama-cpp-python '0.3.35' "
        "(not '0.3.36'); every node must run the same backend and versions (its labels would "
        "differ)"
    )
    assert sorted(fake.killed) == [0, 1, 2] and not project.exists()
    fake = _Different([FACTS, {**FACTS, "backend": "cuda"}])
    monkeypatch.setattr(annotator.jobs.cluster, "connect", lambda address: fake)
    with pytest.raises(AnnotatorError, match=r"actor 1 on node1 .*: backend 'cuda' \(not 'cpu'\)"):
        annotate_on_ray(
            ITEMS,
            project,
            load_rubric(RUBRIC),
            default_model,
            "0" * 64,
            None,
            None,
            EngineSettings(n_threads=1),
            "auto",
            2,
        )
    assert not project.exists()


def test_actors_that_never_start_are_an_error(tmp_path, monkeypatch, default_model):
    """An actor still pending after LOAD_TIMEOUT (too few CPUs, a node that hangs while
    loading) is an error naming it, not a wait for ever."""
    import annotator.jobs.cluster

    fake = _Different([FACTS, FACTS])
    fake.wait = lambda refs, num_returns=1, timeout=None: (refs[:1], refs[1:])
    monkeypatch.setattr(annotator.jobs.cluster, "connect", lambda address: fake)
    with pytest.raises(AnnotatorError, match=r"^Ray actor\(s\) 1 did not start within 900 s"):
        annotate_on_ray(
            ITEMS,
            tmp_path / "p.db",
            load_rubric(RUBRIC),
            default_model,
            "0" * 64,
            None,
            None,
            EngineSettings(n_threads=1),
            "auto",
            2,
        )
    assert sorted(fake.killed) == [0, 1] and not (tmp_path / "p.db").exists()


def test_a_restarted_actor_that_differs_labels_nothing():
    """Ray may restart an actor on another node: it checks itself against the run's facts."""
    from types import SimpleNamespace

    from annotator.jobs.actors import Labeller

    actor = Labeller.__new__(Labeller)  # no model: the check comes before any item
    actor.engine = SimpleNamespace(
        describe=lambda: {**FACTS, "backend": "cuda"},
        annotate=lambda fields: pytest.fail("labelled"),
    )
    with pytest.raises(
        AnnotatorError,
        match=r"\(restarted\) differs from the run: backend "
        r"'cuda' \(not 'cpu'\)$",
    ):
        actor.label([("a", {"text": "x"})], expect=FACTS)


def test_the_block_timeout_grows_with_the_block():
    from annotator.jobs.actors import block_timeout
    from annotator.jobs.cluster import BLOCK

    assert block_timeout(1) < block_timeout(BLOCK) == 600


@pytest.mark.long
def test_a_hung_actor_is_restarted_and_its_blocks_run_again(
    tmp_path, cluster, reference, default_model, monkeypatch
):
    """Two actors; one stops (SIGSTOP: a frozen process, as on a node that hangs) after the
    first labels. Its block times out, it is killed, Ray restarts it and runs its blocks again:
    every item once, one run, labels identical to the sequential engine."""
    import annotator.jobs.cluster

    # Blocks of one item, well within the timeout even on a busy machine.
    monkeypatch.setattr(annotator.jobs.cluster, "BLOCK", 1)
    stopped: list[int] = []
    started = []

    def progress(total, what, rate_unit=None):
        from contextlib import contextmanager

        @contextmanager
        def bar():
            def advance(*_):
                if not stopped:
                    _, pid = started[0].pids[1]
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)

            yield advance

        return bar()

    try:
        run = annotate_on_ray(
            ITEMS,
            tmp_path / "p.db",
            load_rubric(RUBRIC),
            default_model,
            sha256_file(default_model),
            None,
            None,
            EngineSettings(n_threads=1),
            cluster,
            2,
            progress=progress,
            on_start=started.append,
            timeout=20,
        )
    finally:
        for pid in stopped:  # never leave a stopped process behind, whatever happened
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert stopped and run.summary.done_now == 40
    assert run.hung == [
        f"Ray actor 1 on {run.nodes[0]} returned no block in 20 s: taken as "
        "hung, restarted, its blocks run again"
    ]
    assert _labels(tmp_path / "p.db") == reference


@pytest.mark.long
def test_ray_cli_on_parquet_and_model_checked_on_the_node(
    tmp_path, cluster, reference, default_model
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, items, _ = read_items(ITEMS, ["text"])
    data = tmp_path / "items.parquet"
    pq.write_table(
        pa.table({"id": [i.id for i in items], "text": [i.fields["text"] for i in items]}), data
    )
    project = tmp_path / "p.db"
    started = time.monotonic()
    done = run_cli(
        "annotate",
        str(data),
        "--rubric",
        str(RUBRIC),
        "--project",
        str(project),
        "--ray",
        cluster,
        "--actors",
        "2",
        "--threads",
        "1",
        "--block-timeout",
        "300",
    )
    assert done.returncode == 0, done.stderr
    assert "Ray: 2 actors on 1 node(s)" in done.stderr and "hung" not in done.stderr
    assert _labels(project) == reference
    assert time.monotonic() - started < 120
    # A node whose model file differs from the driver's refuses to label.
    with pytest.raises(Exception, match="sha256"):
        annotate_on_ray(
            data,
            tmp_path / "q.db",
            load_rubric(RUBRIC),
            default_model,
            "00" * 32,
            None,
            None,
            EngineSettings(n_threads=1),
            cluster,
            1,
        )


@pytest.mark.long
def test_ray_ctrl_c_stops_cleanly_and_the_rerun_finishes(tmp_path, cluster, reference):
    """Ctrl-C on the driver: the summary and the interrupted line (no traceback, none of Ray's
    reports on the blocks still queued), what was saved stays, the same command resumes."""
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
        "--ray",
        cluster,
        "--actors",
        "1",
        "--threads",
        "1",
    ]
    driver = subprocess.Popen(
        command,
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=hears_ctrl_c,
    )
    deadline = time.monotonic() + 120
    while annotation_count(project) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(driver.pid, signal.SIGINT)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err
    assert "interrupted: finished items are saved" in err
    assert "Traceback" not in err + out and "raylet" not in err + out, err + out
    done = re.search(r"done (\d+) of 40 items \((\d+) now, 0 before\)", err)
    assert done and done[1] == done[2] and 4 <= int(done[1]) < 40, err
    again = subprocess.run(
        command, cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert "(resumed)" in again.stderr
    assert _labels(project) == reference
