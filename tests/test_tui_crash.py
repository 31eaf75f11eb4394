"""A crash in the app shows no item text: one line on the terminal and a private report
(mode 0600) holding exception types and frames only, for the UI thread and for workers."""

from __future__ import annotations

import re
import sqlite3
import stat
from pathlib import Path

import pytest
from conftest import write_csv
from helpers.tui import RUBRIC, opened, run_async
from textual.widgets import TabbedContent
from textual.worker import WorkerFailed

from annotator.data import read_items
from annotator.project.store import Store
from annotator.rubric import load_rubric
from annotator.tui.app import make_app
from annotator.tui.screens.item import ItemScreen

MARKER = "CONFIDENTIAL-4c1e"  # in every item's text


def _project(folder: Path) -> Path:
    data = write_csv(
        folder / "items.csv", [{"id": f"c{n}", "text": f"{MARKER} case file {n}"} for n in range(3)]
    )
    _, items, _ = read_items(data, ["text"])
    project = folder / "p.db"
    with Store(project) as store:
        store.bind_rubric(load_rubric(RUBRIC))
        store.add_items(items)
    return project


def _check_crash(capfd, state: Path, kind: str) -> str:
    """One line on the terminal, naming one report (0600, no item text); the report's text."""
    out, err = capfd.readouterr()
    assert MARKER not in out + err
    reports = list((state / "annotator").glob("crash-*.txt"))
    assert len(reports) == 1, reports
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [
        f"annotator: the app stopped on an internal error ({kind}); "
        f"report (no item text): {reports[0]}"
    ], err
    assert stat.S_IMODE(reports[0].stat().st_mode) == 0o600
    text = reports[0].read_text()
    assert MARKER not in text
    return text


@run_async
async def test_a_crash_in_a_handler_prints_one_line_and_no_item_text(tmp_path, monkeypatch, capfd):
    """The database goes away under the app (here: its connection is closed); the item view,
    whose locals hold the item, fails on its next query. Textual's default handler printed
    those locals."""
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    app = make_app(_project(tmp_path), reviewer="alice")
    with pytest.raises(sqlite3.ProgrammingError):
        async with app.run_test(size=(80, 24)) as pilot:
            await opened(pilot)
            await pilot.press("b")
            assert app.main.query_one(TabbedContent).active == "browse"
            app.store.db.close()
            await pilot.press("enter")  # the first item in full
            await pilot.pause()
    assert app.return_code == 1
    text = _check_crash(capfd, state, "sqlite3.ProgrammingError")
    assert "Cannot operate" not in text  # messages are left out
    assert "error: sqlite3.ProgrammingError" in text
    assert re.search(
        rf"{re.escape(str(Path(ItemScreen.__module__.replace('.', '/'))))}\.py:\d+ "
        r"in _content",
        text,
    ), text


@run_async
async def test_a_crash_in_a_worker_prints_one_line_and_no_item_text(tmp_path, monkeypatch, capfd):
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    app = make_app(_project(tmp_path), reviewer="alice")

    def label_in_a_thread() -> None:
        item = app.item("c1")
        text = item.fields["text"]
        raise ValueError(f"cannot label {text!r}")  # the message quotes the item

    with pytest.raises(WorkerFailed):
        async with app.run_test(size=(80, 24)) as pilot:
            await opened(pilot)
            app.run_worker(label_in_a_thread, thread=True)  # exit_on_error, as by default
            await app.workers.wait_for_complete()
            await pilot.pause()
    text = _check_crash(capfd, state, "ValueError in a worker")
    assert "cannot label" not in text
    assert "raised in the worker: ValueError" in text and "in label_in_a_thread" in text
