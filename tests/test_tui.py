"""The terminal app driven headless with Textual's pilot: every screen, the real model.

One test annotates a small GoEmotions sample with the real default model (pause, cancel and
resume included), browses it, reviews blind in both queues and checks that the agreement on
screen equals `annotator agree`. Others cover errors, the bundled sample, and killing the app
mid-annotation and mid-review.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ROOT, run_cli
from helpers.tui import (
    RUBRIC,
    fabricated_project,
    opened,
    run_async,
    sample_subset,
    text_of,
    wait_for,
)
from textual.widgets import DataTable, OptionList, Static

from annotator.inference.backend import EngineSettings
from annotator.modelfile import sha256_file
from annotator.project.store import Store
from annotator.tui.app import make_app
from annotator.tui.queues import AUDIT, HARD, audit_order
from annotator.tui.screens.ask import AskScreen
from annotator.tui.screens.dimension import DimensionScreen
from annotator.tui.screens.help import HelpScreen
from annotator.tui.screens.item import ItemScreen
from annotator.tui.widgets.agreement_view import AgreementView
from annotator.tui.widgets.annotate_view import AnnotateView
from annotator.tui.widgets.browse_view import BrowseView
from annotator.tui.widgets.project_view import ProjectView
from annotator.tui.widgets.review_view import ReviewView
from annotator.tui.widgets.value_picker import ValuePicker

N_ITEMS = 8


def annotations_in(project) -> int:
    if not project.exists():
        return 0
    db = sqlite3.connect(f"file:{project}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # not created yet
    finally:
        db.close()


@run_async
async def test_annotate_browse_review_agree_with_the_real_model(tmp_path, default_model):
    data = sample_subset(tmp_path, N_ITEMS)
    project = tmp_path / "p.db"
    app = make_app(project, data, RUBRIC)
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        main = app.main

        # Project view: model, rubric, data, counts.
        shown = text_of(main.query_one(ProjectView))
        assert default_model.name in shown and sha256_file(default_model) in shown
        assert "Q4_K_M" in shown and ("backend CPU" in shown or "backend CUDA" in shown)
        assert "goemotions" in shown and "28 values" in shown
        assert f"{N_ITEMS} items · 0 annotated (no run yet)" in shown

        # Annotate; pause at once, then cancel, then resume to the end. Start and pause are
        # called in one tick (what the space key does, twice): 8 short items take well under a
        # second on an idle machine, so waiting between two key presses would race the end.
        await pilot.press("a")
        annotate = main.query_one(AnnotateView)
        annotate.action_start_pause()
        annotate.action_start_pause()
        assert annotate.state in ("pausing", "paused")  # an item in flight still finishes
        await wait_for(pilot, lambda: annotate.state == "paused", what="the pause")
        settled = annotations_in(project)
        assert f"Paused: {settled} of {N_ITEMS} items saved" in text_of(annotate)
        await pilot.pause(1.0)
        assert annotations_in(project) == settled < N_ITEMS
        await pilot.press("c")
        await wait_for(pilot, lambda: annotate.state == "done", what="the cancel")
        kept = annotations_in(project)
        assert kept == settled
        assert f"Cancelled: {kept} of {N_ITEMS} items are saved" in text_of(annotate)
        await pilot.press("space")
        await wait_for(pilot, lambda: annotate.state == "done", what="the end of annotation")
        assert f"Finished: {N_ITEMS} of {N_ITEMS} items annotated ({N_ITEMS - kept} now" in text_of(
            annotate
        )
        assert "items/s" in text_of(annotate)
        with Store(project) as store:
            assert len(store.runs()) == 1  # resumed, not restarted
            labels = {i: lab for i, lab, _ in store.annotations(1)}
        assert len(labels) == N_ITEMS
        assert main.query_one("#annotate-log", DataTable).row_count == N_ITEMS

        # Browse: every row labelled; sort, filter, open an item.
        await pilot.press("b")
        browse = main.query_one(BrowseView)
        table = browse.table
        assert table.row_count == N_ITEMS
        assert all(row.labels == labels[row.item_id] for row in browse.rows.values())
        await pilot.press("s")  # least sure first
        first = table.coordinate_to_cell_key((0, 0)).row_key.value
        assert first == min(
            labels, key=lambda i: (labels[i]["emotion"].margin, list(labels).index(i))
        )
        some_label = str(labels[first]["emotion"].value)
        await pilot.press("slash", *some_label, "enter")
        assert table.row_count == sum(
            str(lab["emotion"].value) == some_label for lab in labels.values()
        )
        await pilot.press("slash", *["backspace"] * len(some_label), "enter")  # clear the filter
        assert table.row_count == N_ITEMS
        await pilot.press("f")  # low confidence
        assert table.row_count == sum(
            lab["emotion"].margin < browse.threshold for lab in labels.values()
        )
        await pilot.press("f", "f", "f")  # back to all
        assert table.row_count == N_ITEMS
        await pilot.press("enter")
        assert isinstance(app.screen, ItemScreen)
        assert "COMMENT" in text_of(app.screen) and "Model (run 1)" in text_of(app.screen)
        await pilot.press("escape")
        assert not isinstance(app.screen, ItemScreen)

        # Review: name and sample size asked first.
        await pilot.press("r")
        assert isinstance(app.screen, AskScreen)
        await pilot.press(*"tester", "enter")
        assert isinstance(app.screen, AskScreen)  # the audit sample size
        await pilot.press("6", "enter")  # the default is selected: typing replaces it
        review = main.query_one(ReviewView)
        assert review.reviewer == "tester" and review.audit_size == 6
        sample = audit_order(labels)[:6]
        picks = [("1",), ("1", "8"), ("2", "8"), ("1",)]  # admiration, joy, neutral, admiration
        reviewed = []
        for keys in picks:
            item = review.current
            assert item in sample
            # Blind: nothing picked, and the model's answer is nowhere on screen before saving.
            picker = review.query_one(ValuePicker)
            assert picker.selected is None and review.active_picker is picker
            assert app.focused is review
            assert "model" not in text_of(review).lower()
            await pilot.press(*keys)
            await pilot.press("enter")
            assert review.revealed
            shown = text_of(review)
            assert f"model {labels[item]['emotion'].value} (p " in shown
            reviewed.append((item, picker.value))
            await pilot.press("enter")
        assert [v for _, v in reviewed] == ["admiration", "joy", "neutral", "admiration"]
        skipped = review.current
        await pilot.press("s")
        assert review.current != skipped and skipped in review.todo
        # The hardest-first queue leaves the audit sample out; its reviews are filed apart.
        await pilot.press("t")
        assert "HARDEST FIRST" in text_of(review)
        hard_item = review.current
        assert hard_item not in sample
        await pilot.press("5", "enter")
        with Store(project) as store:
            rows = store.reviews()
        assert sorted((i, v) for i, _, r, v, q in rows if q == AUDIT and r == "tester") == sorted(
            reviewed
        )
        assert [(i, v) for i, _, r, v, q in rows if q == HARD] == [(hard_item, "approval")]

        # Agreement: equals `annotator agree` on the same project.
        await pilot.press("g")
        agreement = main.query_one(AgreementView)
        await wait_for(
            pilot,
            lambda: (
                agreement.report is not None
                and agreement.report["dimensions"][0]["comparisons"][0]["n"] == 4
            ),
            what="the agreement report",
        )
        await app.workers.wait_for_complete()
        cli = run_cli("agree", str(project), "--json")
        assert cli.returncode == 0, cli.stderr
        assert json.loads(json.dumps(agreement.report)) == json.loads(cli.stdout)
        comparison = agreement.report["dimensions"][0]["comparisons"][0]
        summary = agreement.report["dimensions"][0]["ceiling"]
        assert "1 hardest-first item(s) not counted" in text_of(agreement)
        (row,) = agreement.query_one("#agree-dims", OptionList).options  # one dimension
        one_reviewer = str(row.prompt).split()
        assert one_reviewer[:3] == ["emotion", "4", "-"]  # no ceiling with one reviewer
        assert one_reviewer[3] == ("-" if summary["model"] is None else f"{summary['model']:.2f}")
        # Enter: the dimension's pairs, with three decimals, and its confusion view.
        await pilot.press("enter")
        assert isinstance(app.screen, DimensionScreen)
        shown = text_of(app.screen.query_one("#dimension-detail", Static))
        alpha = "-" if comparison["alpha"] is None else f"{comparison['alpha']:.3f}"
        pair = next(line for line in shown.splitlines() if "model vs tester" in line)
        low, high = comparison["ci95"]
        assert pair.split()[3:5] == ["4", alpha]
        assert ("-" if low is None else f"[{low:.3f}, {high:.3f}]") in pair
        assert "of 4 the same" in shown
        await pilot.press("escape")


@run_async
async def test_browse_and_agreement_follow_new_reviews(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = fabricated_project(tmp_path)
    app = make_app(project.name, reviewer="alice", bootstrap=200)
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        agreement = app.main.query_one(AgreementView)
        await wait_for(pilot, lambda: agreement.report is not None, what="agreement")
        before = agreement.report["dimensions"][0]["comparisons"][0]["n"]
        await pilot.press("r", "enter")  # default sample size: the whole (small) project
        review = app.main.query_one(ReviewView)
        item = review.current
        await pilot.press("3", "enter")
        # The sample covers the whole project here, alice's earlier hard-queue review included:
        # that one stays filed as hard (it may not be blind), so n grows by one.
        audit_items = {i for i, *_, q in app.store.reviews() if q == AUDIT}
        assert len(audit_items) == before + 1
        await wait_for(
            pilot,
            lambda: agreement.report["dimensions"][0]["comparisons"][0]["n"] == before + 1,
            what="the agreement to update",
        )
        assert app.main.query_one(BrowseView).rows[item].reviewed


@run_async
async def test_an_item_reviewed_in_the_hard_queue_is_reviewed_again_blind_in_the_audit_sample(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    project = fabricated_project(tmp_path)  # alice: 8 audit reviews, 1 hard (the last item drawn)
    with Store(project) as store:
        hard_item = audit_order(store.item_ids())[-1]
        assert store.reviews(HARD) == [(hard_item, "emotion", "alice", "joy", HARD)]
    app = make_app(project.name, reviewer="alice", bootstrap=200)
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        await pilot.press("r", "enter")  # default sample size: all 12 items
        review = app.main.query_one(ReviewView)
        assert review.sample_done == 8 and review.current is not None
        assert hard_item in [review.current, *review.todo]  # asked again, not re-filed
        assert not any("count as audit" in n.message for n in app._notifications)
        with Store(project) as store:
            assert {q for i, *_, q in store.reviews() if i == hard_item} == {HARD}
        while review.current != hard_item:
            await pilot.press("2", "enter", "enter")  # save another sampled item, next
        # Blind as any audit item: nothing picked (not the hard review's value either), no
        # model answer, and v does not unblind it.
        picker = review.query_one(ValuePicker)
        assert picker.selected is None and "model" not in text_of(review).lower()
        await pilot.press("v")
        assert review.blind and "model" not in text_of(review).lower()
        await pilot.press("1", "enter")  # admiration, where the hard review said joy
        assert review.revealed and review.sample_done == 12
        with Store(project) as store:
            rows = sorted((v, q) for i, _, r, v, q in store.reviews() if i == hard_item)
            assert rows == [("admiration", AUDIT), ("joy", HARD)]
        agreement = app.main.query_one(AgreementView)
        await wait_for(
            pilot,
            lambda: (
                agreement.report is not None
                and agreement.report["dimensions"][0]["comparisons"][0]["n"] == 12
            ),
            what="the agreement to update",
        )
        await app.workers.wait_for_complete()
        assert "0 hardest-first item(s) not counted" in text_of(agreement)
    # Alpha counts the audit review only: the same with the hard one deleted.
    from annotator.project.reviews import agreement_report

    with Store(project) as store:
        report = agreement_report(store, bootstrap=0)
        store.db.execute("DELETE FROM reviews WHERE queue = 'hard'")
        assert agreement_report(store, bootstrap=0) == report


@run_async
async def test_help_and_keyboard_navigation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make_app(fabricated_project(tmp_path).name, reviewer="alice")
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        tabs = app.main.query_one("#tabs")
        for key, tab in (("a", "annotate"), ("b", "browse"), ("g", "agreement"), ("p", "project")):
            await pilot.press(key)
            assert tabs.active == tab
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "hardest first" in text_of(app.screen)
        await pilot.press("b")  # keys go to the dialog, not to the tabs behind it
        assert tabs.active == "project"
        await pilot.press("escape")
        assert app.screen is app.main
        await pilot.press("r", "4", "enter")  # a sample of 4, all reviewed already by alice
        review = app.main.query_one(ReviewView)
        assert review.current is None and "audit sample is done: 4 of 4" in text_of(review)
        assert app.focused is review  # so t, z and n still work
        await pilot.press("v")  # the audit sample cannot be unblinded
        assert review.blind and any("stays blind" in n.message for n in app._notifications)
        await pilot.press("t")  # hardest first: the other 8 minus alice's reviews
        picker = review.query_one(ValuePicker)
        assert review.current is not None and review.active_picker is picker
        await pilot.press("right", "right", "down")  # 2nd value, then one row down
        assert picker._positions[picker.selected] == (2, picker._positions[1][1])
        await pilot.press("tab")  # one dimension: tab stays on it
        assert review.active_picker is picker and app.focused is review
        await pilot.press("v")  # the hardest-first queue may show the model's answer
        assert not review.blind and "Not blind. Model: emotion" in text_of(review)
        await pilot.press("t")
        assert review.blind and "Model" not in text_of(review)


@run_async
async def test_the_bundled_sample_opens_with_no_arguments(tmp_path, monkeypatch, default_model):
    monkeypatch.chdir(tmp_path)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        assert app.info.launch.demo and app.info.errors == [] and app.info.model_error is None
        shown = text_of(app.main.query_one(ProjectView))
        assert "demo.db" in shown and "(bundled sample) goemotions/items.csv · 40 items" in shown
    with Store(tmp_path / "demo.db") as store:
        assert len(store.item_ids()) == 40 and store.rubric().name == "goemotions"


@pytest.mark.parametrize("case", ["bad model", "bad rubric", "no project", "not a project"])
@run_async
async def test_errors_are_messages_in_the_app(tmp_path, case):
    data = sample_subset(tmp_path, 4)
    project, rubric, model = tmp_path / "p.db", RUBRIC, None
    expected = {
        "bad model": "not a GGUF model file",
        "bad rubric": "invalid TOML",
        "no project": "project file not found",
        "not a project": "not a project file",
    }[case]
    if case == "bad model":
        model = tmp_path / "broken.gguf"
        model.write_bytes(b"definitely not a model" * 10)
    elif case == "bad rubric":
        rubric = tmp_path / "rubric.toml"
        rubric.write_text("name = [unclosed\n")
    elif case == "no project":
        data = None
    else:
        project.write_bytes(b"not sqlite at all " * 64)
    app = make_app(project, data, rubric, model)
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        assert expected in text_of(app.main.query_one("#project-errors"))
        assert any(expected in n.message for n in app._notifications)
        await pilot.press("a", "space")  # annotating is refused politely
        annotate = app.main.query_one(AnnotateView)
        assert annotate.state == "error" and "Cannot annotate" in text_of(annotate)
        await pilot.press("b", "r", "g")
        assert app.is_running
    if case in ("bad rubric", "no project"):
        assert not project.exists()  # nothing half-made left behind


@run_async
async def test_a_model_that_fails_to_load_is_reported_in_the_app(tmp_path, default_model):
    data = sample_subset(tmp_path, 4)
    app = make_app(tmp_path / "p.db", data, RUBRIC, settings=EngineSettings(n_ctx=64))
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        await pilot.press("a", "space")
        annotate = app.main.query_one(AnnotateView)
        await wait_for(pilot, lambda: "Annotation stopped" in text_of(annotate), 120, "the failure")
        assert "context tokens" in text_of(annotate)
        assert any(n.title == "annotation failed" for n in app._notifications)
        assert app.is_running


KILL_ANNOTATE = """
import asyncio, sys
from annotator.tui.app import make_app

async def main():
    app = make_app(sys.argv[1], sys.argv[2], sys.argv[3])
    async with app.run_test(size=(80, 24)) as pilot:
        while app.info is None:
            await pilot.pause(0.05)
        await pilot.press("a", "space")
        while True:
            await pilot.pause(0.1)

asyncio.run(main())
"""

KILL_REVIEW = """
import asyncio, pathlib, sys
from annotator.tui.app import make_app

async def main():
    app = make_app(sys.argv[1], reviewer="bob")
    async with app.run_test(size=(80, 24)) as pilot:
        while app.info is None:
            await pilot.pause(0.05)
        await pilot.press("r", "enter", "2", "enter", "enter", "3", "enter")
        pathlib.Path(sys.argv[2]).write_text("saved")
        while True:
            await pilot.pause(0.1)

asyncio.run(main())
"""


def _spawn(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.long
@run_async
async def test_killing_the_app_mid_annotation_loses_nothing(tmp_path, default_model):
    data = sample_subset(tmp_path, 8)
    project = tmp_path / "p.db"
    child = _spawn(KILL_ANNOTATE, str(project), str(data), str(RUBRIC))
    try:
        deadline = time.monotonic() + 180
        while annotations_in(project) < 2:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the app annotated nothing"
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    kept = annotations_in(project)
    assert kept >= 2
    app = make_app(project, data, RUBRIC)
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        await pilot.press("a", "space")
        annotate = app.main.query_one(AnnotateView)
        await wait_for(pilot, lambda: annotate.state == "done", what="the resumed run")
        assert f"Finished: 8 of 8 items annotated ({8 - kept} now" in text_of(annotate)
    with Store(project) as store:
        assert len(store.runs()) == 1 and len(store.annotations(1)) == 8


def test_killing_the_app_mid_review_loses_no_saved_review(tmp_path):
    project = fabricated_project(tmp_path, reviews=False)
    marker = tmp_path / "saved"
    child = _spawn(KILL_REVIEW, str(project), str(marker))
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the app saved nothing"
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with Store(project) as store:
        rows = store.reviews()
    assert sorted((r, v, q) for _, _, r, v, q in rows) == [
        ("bob", "amusement", AUDIT),
        ("bob", "anger", AUDIT),
    ]


def test_app_modules_without_widgets_import_no_textual():
    code = (
        "import sys, annotator.tui.launch, annotator.tui.project, annotator.tui.annotation, "
        "annotator.tui.queues, annotator.tui.confusion, annotator.tui.calibration, "
        "annotator.tui.formatting; print('textual' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@run_async
async def test_keys_typed_ahead_land_in_order(tmp_path, newsroom_rubric):
    """A burst of keys (fast typing, paste, tmux) with focus changes in between."""
    from conftest import SAMPLES
    from textual import events

    from annotator.data import read_items

    _, items, _ = read_items(SAMPLES / "newsroom" / "items.csv", ["summary", "article"])
    project = tmp_path / "news.db"
    with Store(project) as store:
        store.bind_rubric(newsroom_rubric)
        store.add_items(items[:4])
    app = make_app(project, reviewer="dave")
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)

        def burst(*keys: str) -> None:  # queued at once, as the terminal driver does
            for key in keys:
                app.post_message(events.Key(key, key if len(key) == 1 else None))

        burst("r")
        await wait_for(pilot, lambda: isinstance(app.screen, AskScreen), 10, "the size prompt")
        await pilot.press("enter")
        review = app.main.query_one(ReviewView)
        burst("4", "tab", "5", "tab", "3", "tab", "right", "right")
        # Waiting for the end state, not a fixed pause: a loaded machine only delays the keys;
        # a lost or reordered key never reaches it.
        await wait_for(
            pilot,
            lambda: [p.value for p in review.query(ValuePicker)] == [4, 5, 3, 2],
            10,
            "the picked values 4, 5, 3, 2",
        )
        burst("g", "p", "a", "space")  # tab keys then a key for the new tab
        await wait_for(
            pilot, lambda: app.main.query_one("#tabs").active == "annotate", 10, "the annotate tab"
        )
        await pilot.pause(0.3)
        assert app.main.query_one(AnnotateView).state == "error"  # no data: refused, not lost
