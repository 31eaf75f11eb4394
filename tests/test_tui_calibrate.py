"""Calibrating from the app (`k` on the Agreement tab), driven with Textual's pilot by keys:
review the audit sample, fit heads with the real calibration code on the project's stored
hidden states, compare the new run's out-of-fold alpha with the old run's, adopt it, write
the `calibrate --out` file. The project is made up (tests/helpers/calibrate.py); the last test
runs the real default model's stored states."""

from __future__ import annotations

import threading

import pytest
from conftest import SAMPLES, run_cli, write_csv
from helpers.calibrate import DIMENSIONS, calibration_project, truth
from helpers.tui import opened, run_async, text_of, wait_for

from annotator.modelfile import read_model_info, sha256_file
from annotator.project.reviews import agreement_report
from annotator.project.store import Store
from annotator.tui.app import make_app
from annotator.tui.calibration import calibrate_project
from annotator.tui.project import latest_run_id
from annotator.tui.queues import AUDIT
from annotator.tui.screens import calibrate as calibrate_screen
from annotator.tui.screens.ask import AskScreen
from annotator.tui.screens.calibrate import CalibrateScreen
from annotator.tui.widgets.agreement_view import AgreementView
from annotator.tui.widgets.browse_view import BrowseView
from annotator.tui.widgets.review_view import ReviewView

BOOTSTRAP = 50  # resamples: the agreement recomputed after every save stays quick


async def review_audit_sample(pilot, size: int) -> None:
    """Ask for an audit sample of `size` and review it all by keys, with the true values."""
    true = truth()
    await pilot.press("r", *str(size), "enter")
    review = pilot.app.main.query_one(ReviewView)
    for _ in range(size):
        item = review.current
        assert item is not None
        keys = []
        for k, (name, _, _) in enumerate(DIMENSIONS):
            keys += [str(true[item][name] + 1)] + (["tab"] if k < len(DIMENSIONS) - 1 else [])
        await pilot.press(*keys, "enter")
        assert review.revealed, item
        await pilot.press("enter")


def save_true_reviews(project, n: int) -> None:
    """alice's true values for the first `n` items, as audit reviews."""
    true = truth()
    rows = [
        (i, name, values[true[i][name]]) for i in list(true)[:n] for name, _, values in DIMENSIONS
    ]
    with Store(project) as store:
        store.save_reviews("alice", AUDIT, rows)


async def calibrated(pilot) -> CalibrateScreen:
    await pilot.press("g")
    view = pilot.app.main.query_one(AgreementView)
    await wait_for(pilot, lambda: view.report is not None, what="agreement")
    await pilot.press("k")
    screen = pilot.app.screen
    assert isinstance(screen, CalibrateScreen)
    await wait_for(pilot, lambda: screen.outcome is not None or "cannot" in screen.status)
    await pilot.pause()
    return screen


@run_async
async def test_review_calibrate_compare_adopt_by_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = calibration_project(tmp_path)
    app = make_app(project.name, reviewer="alice", bootstrap=BOOTSTRAP)
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        await review_audit_sample(pilot, 30)
        with Store(project) as store:
            audit = {(i, d) for i, d, r, _, q in store.reviews() if q == AUDIT and r == "alice"}
        assert len(audit) == 30 * len(DIMENSIONS)
        screen = await calibrated(pilot)
        assert screen.outcome is not None, screen.status
        result = screen.outcome.result
        assert (result.parent, result.run_id) == (1, 2)
        assert result.fitted == {"quality": 30, "kind": 30}
        # Stored, not adopted: run 1 stays the project's current run until `a`.
        with Store(project.name) as store:  # as the app names it
            assert store.run().id == 1
            old = agreement_report(store, 1, bootstrap=BOOTSTRAP)
            new = agreement_report(store, 2, bootstrap=BOOTSTRAP)
        assert screen.outcome.old == old and screen.outcome.new == new
        shown = text_of(screen)
        assert "dimension   n  run 1  95% CI" in shown and "run 2  95% CI" in shown
        for d_old, d_new in zip(old["dimensions"], new["dimensions"], strict=True):
            a, b = d_old["ceiling"], d_new["ceiling"]
            row = next(line for line in shown.splitlines() if line.startswith(d_new["dimension"]))
            cells = [f"{a['model']:.2f}", f"[{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]"]
            cells += [f"{b['model']:.2f}", f"[{b['ci95'][0]:.2f}, {b['ci95'][1]:.2f}]", "30"]
            assert row.split()[1:] == ["30", *" ".join(cells).split()]
            # The heads read the states that carry the true values: out-of-fold, they agree
            # with the reviewer far better than the noisy labels did.
            assert b["model"] > a["model"] + 0.3, d_new["dimension"]
        assert max(len(line) for line in shown.splitlines()) <= 76
        assert "a: make run 2 current" in shown

        await pilot.press("a")
        assert screen.adopted and "run 2 is now the project's current run" in screen.status
        with Store(project) as store:
            # Persisted in the project file: the run the app opens with (`latest_run_id`).
            assert store.run().id == 2 and latest_run_id(store) == 2
        assert app.run_id == 2
        with Store(project) as store:
            labels = {i: lab for i, lab, _ in store.annotations(2)}
        browse = app.main.query_one(BrowseView)
        assert all(row.labels == labels[i] for i, row in browse.rows.items())
        await pilot.press("escape")
        assert not isinstance(app.screen, CalibrateScreen)
        view = app.main.query_one(AgreementView)
        await wait_for(pilot, lambda: view.report is not None and view.report["run"] == 2)
        await app.workers.wait_for_complete()


@run_async
async def test_dismissed_run_is_not_adopted_and_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = calibration_project(tmp_path)
    app = make_app(project.name, reviewer="alice", bootstrap=BOOTSTRAP)
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        # No reviews yet.
        screen = await calibrated(pilot)
        assert screen.outcome is None
        assert screen.status.startswith("cannot calibrate: no audit or imported reviews yet")
        await pilot.press("escape")
        # Too few: 5 reviewed items, a head needs 20.
        await review_audit_sample(pilot, 5)
        screen = await calibrated(pilot)
        assert screen.outcome is None and "\n" not in screen.status
        assert "cannot calibrate: no dimension has enough reviewed items" in screen.status
        assert "quality: 5 reviewed items; a head needs 20" in screen.status
        await pilot.press("escape")
        with Store(project) as store:
            assert [r.id for r in store.runs()] == [1]  # nothing stored
        # Enough (saved straight into the store: the keys are the test above's): calibrated,
        # then dismissed. The run is stored but not current.
        save_true_reviews(project, 30)
        screen = await calibrated(pilot)
        assert screen.outcome is not None, screen.status
        # The run's model file is not there (a made-up project): a one-line error, no file.
        await pilot.press("w")
        assert isinstance(app.screen, AskScreen)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "model file" in screen.status, what="the error")
        assert screen.status == "model.gguf: run 2's model file is not there; --out reads it"
        assert not (tmp_path / "p-run2.gguf").exists()
        await pilot.press("escape")
        assert app.run_id == 1
    with Store(project) as store:
        assert store.run().id == 1 and [r.id for r in store.runs()] == [2, 1]


@run_async
async def test_escape_cancels_a_calibration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = calibration_project(tmp_path)
    save_true_reviews(project, 30)
    # The calibration waits after its first step until esc was pressed.
    pressed = threading.Event()

    def held(project, run_id, bootstrap, tell):
        def first_then_wait(step: str) -> None:
            tell(step)
            pressed.wait(30)

        return calibrate_project(project, run_id, bootstrap, first_then_wait)

    monkeypatch.setattr(calibrate_screen, "calibrate_project", held)
    app = make_app(project.name, bootstrap=BOOTSTRAP)
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        await pilot.press("g", "k")
        screen = app.screen
        assert isinstance(screen, CalibrateScreen)
        await wait_for(pilot, lambda: screen.status == "reading the stored outputs...")
        assert "esc: cancel" in text_of(screen)
        await pilot.press("escape")
        pressed.set()
        assert not isinstance(app.screen, CalibrateScreen)
        await wait_for(
            pilot,
            lambda: any("cancelled; nothing was stored" in n.message for n in app._notifications),
            what="the cancel",
        )
    with Store(project) as store:
        assert [r.id for r in store.runs()] == [1]


@pytest.mark.long
@run_async
async def test_calibrate_and_write_the_head_file_on_the_real_models_states(tmp_path, monkeypatch):
    """The real default model's stored states: annotate, import 30 reviews, then `k`, `a` and
    `w` in the app write the head file that `calibrate --out` writes."""
    import csv

    monkeypatch.chdir(tmp_path)
    rubric = tmp_path / "rubric.toml"
    rubric.write_text((SAMPLES / "goemotions" / "rubric.toml").read_text())
    items = list(csv.DictReader((SAMPLES / "goemotions" / "items.csv").open(encoding="utf-8")))
    data = write_csv(tmp_path / "items.csv", items[:40], ["id", "text"])
    db = tmp_path / "p.db"
    done = run_cli(
        "annotate", str(data), "--rubric", str(rubric), "--project", str(db), "--n-ctx", "1024"
    )
    assert done.returncode == 0, done.stderr
    emotions = ("joy", "anger", "neutral")
    rows = [{"id": r["id"], "emotion": emotions[len(r["text"]) % 3]} for r in items[:30]]
    reviews = write_csv(tmp_path / "reviews.csv", rows, ["id", "emotion"])
    assert run_cli("review", "import", str(db), str(reviews), "--reviewer", "ann").returncode == 0
    app = make_app(db.name, bootstrap=BOOTSTRAP)
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        screen = await calibrated(pilot)
        assert screen.outcome is not None, screen.status
        assert screen.outcome.result.fitted == {"emotion": 30}
        await pilot.press("a", "w")
        assert isinstance(app.screen, AskScreen)
        await pilot.press("enter")  # the default name, beside the project
        await wait_for(pilot, lambda: screen.written is not None or "cannot" in screen.status)
        assert screen.written is not None, screen.status
        out, sha = screen.written
        assert out.resolve() == (tmp_path / "p-run2.gguf").resolve()
        assert sha == sha256_file(out) and f"sha256 {sha}" in screen.status
        assert "head file" in screen.status
    info = read_model_info(out)
    assert info.is_head_file and info.rubric is not None and info.head(info.rubric) is not None
    with Store(db) as store:
        assert store.run().id == 2
