"""Screenshots of the app's screens at 80x24 (pytest-textual-snapshot; Textual pinned exactly).

Every screen here is built on a fabricated project (seeded labels and reviews, relative paths)
so nothing depends on timing, the machine or where the tests run. Update with
`pytest tests/test_tui_snapshots.py --snapshot-update` and look at the SVGs before committing.
"""

from __future__ import annotations

import pytest
from helpers.calibrate import DIMENSIONS as CALIBRATION_DIMENSIONS
from helpers.calibrate import calibration_project, truth
from helpers.dialogue import dialogue_project
from helpers.tui import fabricated_project, opened, text_of, wait_for
from textual.widgets import Static

from annotator.project.store import Store
from annotator.tui.app import make_app
from annotator.tui.screens.calibrate import CalibrateScreen
from annotator.tui.screens.curve import CurveScreen
from annotator.tui.widgets.agreement_view import AgreementView


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the app shows paths relative to the working directory
    return fabricated_project(tmp_path).name


async def _opened_quietly(pilot) -> None:
    await opened(pilot)
    pilot.app.clear_notifications()


def test_project_view_with_a_broken_model(snap_compare, project, tmp_path):
    """Errors are a panel in the app: the model is not a GGUF file; the project still opens."""
    (tmp_path / "broken.gguf").write_bytes(b"not a model" * 10)
    app = make_app(project, model="broken.gguf")
    assert snap_compare(app, run_before=_opened_quietly)


def test_browse_least_sure_first(snap_compare, project):
    app = make_app(project)

    async def run_before(pilot) -> None:
        await _opened_quietly(pilot)
        await pilot.press("b", "s")

    assert snap_compare(app, run_before=run_before)


def test_review_is_blind(snap_compare, project):
    """An audit item with a value picked and not yet saved: no model answer anywhere."""
    app = make_app(project, reviewer="alice")

    async def run_before(pilot) -> None:
        await _opened_quietly(pilot)
        await pilot.press("r", "1", "0", "enter", "4")
        pilot.app.clear_notifications()

    assert snap_compare(app, run_before=run_before)


def test_review_after_saving_reveals_the_model(snap_compare, project):
    app = make_app(project, reviewer="alice")

    async def run_before(pilot) -> None:
        await _opened_quietly(pilot)
        await pilot.press("r", "1", "0", "enter", "4", "enter")
        pilot.app.clear_notifications()

    assert snap_compare(app, run_before=run_before)


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
def test_agreement(snap_compare, project, theme):
    app = make_app(project, bootstrap=200)

    async def run_before(pilot) -> None:
        await _opened_quietly(pilot)
        pilot.app.theme = theme
        await pilot.press("g")
        view = pilot.app.main.query_one(AgreementView)
        await wait_for(pilot, lambda: view.report is not None, what="agreement")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert "emotion" in str(view.query_one("#agree-dims").get_option_at_index(0).prompt)

    assert snap_compare(app, run_before=run_before)


def test_help(snap_compare, project):
    app = make_app(project)

    async def run_before(pilot) -> None:
        await _opened_quietly(pilot)
        await pilot.press("question_mark")

    assert snap_compare(app, run_before=run_before)


def test_agreement_six_dimensions_three_reviewers(snap_compare, tmp_path, monkeypatch):
    """Can I trust this dimension: a six-dimension rubric with three reviewers on one 80x24
    screen, one line per dimension (issue 24)."""
    monkeypatch.chdir(tmp_path)
    app = make_app(dialogue_project(tmp_path).name, bootstrap=100)

    async def run_before(pilot) -> None:
        await _opened_quietly(pilot)
        await pilot.press("g")
        view = pilot.app.main.query_one(AgreementView)
        await wait_for(pilot, lambda: view.report is not None, what="agreement")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert len(view.query_one("#agree-dims").options) == 6

    assert snap_compare(app, run_before=run_before)


def test_agreement_pairs_of_one_dimension(snap_compare, tmp_path, monkeypatch):
    """Enter on a dimension's row: each pair of coders, the reviewers' own row marked as the
    ceiling, and the model-vs-reviewer picture."""
    monkeypatch.chdir(tmp_path)
    app = make_app(dialogue_project(tmp_path).name, bootstrap=100)

    async def run_before(pilot) -> None:
        await _opened_quietly(pilot)
        await pilot.press("g")
        view = pilot.app.main.query_one(AgreementView)
        await wait_for(pilot, lambda: view.report is not None, what="agreement")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("down", "enter")
        assert "ceiling: rater1 vs rater2 vs rater3" in text_of(pilot.app.screen.query_one(Static))

    assert snap_compare(app, run_before=run_before)


def test_how_many_reviews_are_enough(snap_compare, tmp_path, monkeypatch):
    """`c` on the Agreement tab: the head's learning curve, as `calibrate --curve` prints it."""
    monkeypatch.chdir(tmp_path)
    app = make_app(dialogue_project(tmp_path).name, bootstrap=100)

    async def run_before(pilot) -> None:
        await _opened_quietly(pilot)
        await pilot.press("g")
        view = pilot.app.main.query_one(AgreementView)
        await wait_for(pilot, lambda: view.report is not None, what="agreement")
        await pilot.app.workers.wait_for_complete()
        await pilot.press("c")
        screen = pilot.app.screen
        assert isinstance(screen, CurveScreen)
        await wait_for(pilot, lambda: screen.lines is not None, what="the curve")
        await pilot.pause()
        assert any(line.startswith("overall") and "±" in line for line in screen.lines)
        assert max(len(line) for line in screen.lines) <= 76  # no wrapping in the dialog

    assert snap_compare(app, run_before=run_before)


def test_calibrate_from_the_app(snap_compare, tmp_path, monkeypatch):
    """`k` on the Agreement tab: heads fitted on 30 audit reviews, the new run's out-of-fold
    alpha beside the current run's, with 95% intervals (issue 24)."""
    monkeypatch.chdir(tmp_path)
    project = calibration_project(tmp_path)
    true = truth()
    with Store(project) as store:
        store.save_reviews(
            "alice",
            "audit",
            [
                (i, name, values[true[i][name]])
                for i in list(true)[:30]
                for name, _, values in CALIBRATION_DIMENSIONS
            ],
        )
    app = make_app(project.name, bootstrap=100)

    async def run_before(pilot) -> None:
        await _opened_quietly(pilot)
        await pilot.press("g")
        view = pilot.app.main.query_one(AgreementView)
        await wait_for(pilot, lambda: view.report is not None, what="agreement")
        await pilot.press("k")
        screen = pilot.app.screen
        assert isinstance(screen, CalibrateScreen)
        await wait_for(pilot, lambda: screen.outcome is not None, what="the calibration")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert "a: make run 2 current" in text_of(screen)

    assert snap_compare(app, run_before=run_before)
