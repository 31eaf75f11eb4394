"""A calibrated run stored without becoming the project's current run, adopted later
(`calibrate(adopt=False)`, `Store.adopt_run`: what the app's calibrate screen does), and
`calibrate`'s progress steps and refusal without any head. Real calibration code on a made-up
project's stored hidden states (tests/helpers/calibrate.py)."""

from __future__ import annotations

import pytest
from helpers.calibrate import DIMENSIONS, RUBRIC, calibration_project, truth

from annotator.calibration.calibrate import calibrate
from annotator.errors import AnnotatorError
from annotator.project.store import Store
from annotator.tui.queues import AUDIT


def review_quality(store: Store, n: int) -> None:
    """True values for the first `n` items, on the ordinal dimension only (a fast fit)."""
    true = truth()
    name, _, values = DIMENSIONS[0]
    store.save_reviews("alice", AUDIT, [(i, name, values[true[i][name]]) for i in list(true)[:n]])


def test_a_run_stored_without_adopting_it_is_adopted_later(tmp_path):
    project = calibration_project(tmp_path)
    with Store(project) as store:
        review_quality(store, 30)
        steps: list[str] = []
        result = calibrate(store, adopt=False, progress=steps.append)
        assert steps == [
            "reading the stored outputs",
            "fitting a head on quality (1 of 2)",
            "fitting a head on kind (2 of 2)",
            "storing the new run",
        ]
        assert result.run_id == 2 and store.run().id == 1  # stored, not current
        assert [r.id for r in store.runs()] == [2, 1]
        # The same calibration again reuses run 2 and still does not adopt it.
        assert calibrate(store, adopt=False).run_id == 2 and store.run().id == 1
        assert store.adopt_run(2).id == 2 and store.run().id == 2
    with Store(project) as store:  # kept in the project file
        assert store.run().id == 2
        assert store.adopt_run(1).id == 1 and store.run().id == 1  # and back
        with pytest.raises(AnnotatorError, match="no run 9"):
            store.adopt_run(9)
        # A run added since (another annotate run) is the latest, as with `calibrate`.
        run_id, _ = store.find_or_start_run(
            model_path="other.gguf",
            model_sha256="1" * 64,
            rubric=RUBRIC,
            data_path="items.csv",
            data_sha256="0" * 64,
            settings={"settings": {"n_ctx": 4096, "hidden_layer": 9}, "backend": "cpu"},
        )
        assert run_id == 3 and store.run().id == 3
        # Run 2 lacks an item that run 1 (its parent) has, as after a resumed annotate: stale.
        item = store.items()[0].id
        with store.transaction() as db:
            db.execute("DELETE FROM annotations WHERE run_id = 2 AND item_id = ?", (item,))
        with pytest.raises(AnnotatorError, match="run 2 was read from a run that has labelled"):
            store.adopt_run(2)


def test_without_any_head_nothing_is_stored_and_a_step_can_stop_it(tmp_path):
    project = calibration_project(tmp_path)
    with Store(project) as store:
        review_quality(store, 5)
        with pytest.raises(AnnotatorError) as caught:
            calibrate(store, adopt=False, require_head=True)
        assert str(caught.value) == (
            "no dimension has enough reviewed items for a head (quality: 5 reviewed items; "
            "a head needs 20 with two values or more; kind: 0 reviewed items; a head needs 20 "
            "with two values or more)"
        )
        review_quality(store, 30)

        def stop(step: str) -> None:
            if step.startswith("fitting a head on kind"):
                raise KeyboardInterrupt  # what the app's cancel raises, in effect

        with pytest.raises(KeyboardInterrupt):
            calibrate(store, adopt=False, progress=stop)
        assert [r.id for r in store.runs()] == [1]
