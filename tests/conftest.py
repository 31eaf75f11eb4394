"""Shared fixtures: the real default model, the bundled samples, small data files."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "annotator" / "samples"
SHARED_DATA = ROOT.parent / "shared" / "data"


def _one_cpu_share_per_worker() -> None:
    """Under pytest-xdist (`make test` runs one worker per CPU), pin each worker and everything
    it starts to its own share of the CPUs. llama.cpp and torch size their thread pools from
    the CPUs a process may use; two workers each spinning two threads on two cores wait on
    each other at every barrier (a run can be many times slower), one thread each does not."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cpus = sorted(os.sched_getaffinity(0))
    if not worker.startswith("gw") or count < 2 or len(cpus) < count:
        return
    index = int(worker[2:])
    os.sched_setaffinity(0, cpus[index % count :: count])


_one_cpu_share_per_worker()  # before any test module imports torch or llama.cpp


@pytest.fixture(scope="session")
def default_model() -> Path:
    from annotator.modelfile import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def newsroom_rubric():
    from annotator.rubric import load_rubric

    return load_rubric(SAMPLES / "newsroom" / "rubric.toml")


@pytest.fixture(scope="session")
def goemotions_rubric():
    from annotator.rubric import load_rubric

    return load_rubric(SAMPLES / "goemotions" / "rubric.toml")


def annotation_count(project: Path) -> int:
    """Labels stored in a project so far (0 before the file exists), read while others write."""
    try:
        db = sqlite3.connect(f"file:{project}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def hears_ctrl_c() -> None:
    """`preexec_fn` of a command a test interrupts with SIGINT. Tests started as a shell's
    background job (as CI may start them) ignore SIGINT, and a child inherits that: it would
    never see the Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


EXTRAS_REQUIRED = os.environ.get("ANNOTATOR_TEST_EXTRAS") == "required"  # set by `make test`


def import_extra(module: str, distribution: str):
    """`module` from an optional extra ([cluster], [export], [train]), imported for real.

    Only a distribution that is not installed at all skips the calling test file (and not even
    that under `make test`, which installs every extra and sets ANNOTATOR_TEST_EXTRAS=required).
    An installed but broken one fails: its ImportError ends the file's collection, so CI never
    stays green with these tests not run."""
    import importlib
    import importlib.metadata

    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        why = f"{distribution} is not installed (an optional extra)"
        if EXTRAS_REQUIRED:
            pytest.fail(f"{why}, and ANNOTATOR_TEST_EXTRAS=required", pytrace=False)
        pytest.skip(why, allow_module_level=True)
    return importlib.import_module(module)


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0])
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


NO_NETWORK = """
import socket

def _refuse(*args, **kwargs):
    raise OSError("network access attempted during an offline test")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""


def offline_site(folder: Path) -> Path:
    """A folder for PYTHONPATH whose sitecustomize makes any network connection fail."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(NO_NETWORK)
    return folder


def run_cli(
    *args: str, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """The real `annotator` command in a subprocess (so imports and exit codes are real)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "annotator", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=600,
    )


sys.path.insert(0, str(ROOT))  # bench/ helpers (reading ../shared/data) are used by tests too
