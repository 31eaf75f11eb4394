"""The teach queue: items picked to improve the head, never the audit sample, never in alpha.

The selection code runs for real on made-up (seeded) hidden states and margins in a real
project store; calibrate fits real heads on them. The app test drives the Review tab.
"""

from __future__ import annotations

import numpy as np
from helpers.tui import fabricated_project, opened, run_async, text_of, wait_for

from annotator import dashboard
from annotator.calibration.calibrate import calibrate
from annotator.calibration.teach import TEACH, spread_picks, teach_queue
from annotator.data import Item
from annotator.project.reviews import agreement_report, queue_items
from annotator.project.store import Label, Output, Store
from annotator.tui import queues

N_EMBD = 12


def outputs(n: int, seed: int = 0, dims: tuple[str, ...] = ("a", "b")) -> list[Output]:
    rng = np.random.default_rng(seed)
    found = []
    for k in range(n):
        labels = {d: Label(1, 0.5, float(rng.uniform(0, 1))) for d in dims}
        hidden = rng.normal(size=(len(dims), N_EMBD)).astype("<f2").tobytes()
        found.append(Output(f"i{k:03d}", labels, None, hidden, 10, 0, 0.0))
    return found


def test_the_teach_queue_never_holds_an_audit_item_nor_a_reviewed_one():
    outs = outputs(120)
    order = queues.audit_order(o.item_id for o in outs)
    rng = np.random.default_rng(1)
    for size in (0, 1, 20, 60, 110, 120):
        sample = set(order[:size])
        mine = {o.item_id for o in outs if rng.uniform() < 0.2}
        covered = mine | set(order[: size // 2])
        picks = teach_queue(outs, 2, sample | mine, covered, size=40)
        assert not set(picks) & sample and not set(picks) & mine
        assert (
            len(picks)
            == len(set(picks))
            == min(40, len(set(o.item_id for o in outs) - sample - mine))
        )


def test_the_teach_queue_is_deterministic():
    outs = outputs(80, seed=3)
    first = teach_queue(outs, 2, {"i001", "i002"}, {"i010", "i011"})
    assert first == teach_queue(outs, 2, ["i002", "i001"], ("i011", "i010"))
    assert first == teach_queue(list(outs), 2, {"i001", "i002"}, {"i010", "i011"})
    assert len(first) == 20


def test_doubt_first_then_spread_away_from_copies_and_covered_items():
    # Ten near-copies of one very doubtful item, forty spread items less doubtful.
    rng = np.random.default_rng(0)
    copies = rng.normal(size=(1, 4)) * 10 + rng.normal(size=(10, 4)) * 0.01
    spread = rng.normal(size=(40, 4)) * 10
    points = np.vstack([copies, spread])
    doubts = np.array([0.9] * 10 + list(rng.uniform(0.5, 0.7, 40)))
    picks = spread_picks(doubts, points, 0, 5)
    assert picks[0] == 0  # the most doubtful comes first
    assert sum(p < 10 for p in picks) == 1  # then not another copy of it
    # Without features: by doubt alone, ties to the first.
    assert spread_picks(doubts, None, 0, 3) == [0, 1, 2]
    # An item the head has already seen covers its copies: none of them is picked.
    covered = np.vstack([points, copies[:1]])
    assert not any(p < 10 for p in spread_picks(doubts, covered, 1, 5))


def project_with_states(tmp_path, newsroom_rubric, n: int = 60):
    """A project with made-up probabilities and hidden states for an ordinal rubric, whose
    first state feature carries each item's true score (so a head can learn it)."""
    rng = np.random.default_rng(5)
    dims = newsroom_rubric.dimensions
    truth = {}
    with Store(tmp_path / "p.db") as store:
        store.bind_rubric(newsroom_rubric)
        items = [
            Item(f"i{k:03d}", k + 1, {"summary": f"s{k}", "article": f"a{k}"}) for k in range(n)
        ]
        store.add_items(items)
        run_id, _ = store.find_or_start_run(
            model_path="m.gguf",
            model_sha256="0" * 64,
            rubric=newsroom_rubric,
            data_path="d.csv",
            data_sha256="0" * 64,
            settings={"settings": {"hidden_layer": 8}, "readout": {"rule": "argmax"}},
        )
        for item in items:
            truth[item.id] = int(rng.integers(1, 6))
            states = rng.normal(size=(len(dims), N_EMBD))
            states[:, 0] = truth[item.id] * 3
            probs = {d.name: list(rng.dirichlet(np.ones(len(d.values)))) for d in dims}
            labels = {d.name: Label(d.values[0], 0.3, float(rng.uniform(0, 1))) for d in dims}
            store.save_annotation(
                run_id, item.id, labels, 10, 0, 0.0, probs, states.astype("<f2").tobytes()
            )
    return tmp_path / "p.db", truth


def test_heads_learn_from_teach_reviews_but_alpha_never_counts_them(tmp_path, newsroom_rubric):
    project, truth = project_with_states(tmp_path, newsroom_rubric)
    dims = [d.name for d in newsroom_rubric.dimensions]
    with Store(project) as store:
        order = queues.audit_order(store.item_ids())
        sample = order[:20]
        store.save_reviews("ann", "audit", [(i, d, truth[i]) for i in sample for d in dims])
        before = agreement_report(store, bootstrap=0)
        taught = queues.teach_todo(store, 1, set(sample))
        assert len(taught) == 20 and not set(taught) & set(sample)
        store.save_reviews("ann", TEACH, [(i, d, truth[i]) for i in taught for d in dims])
        # The teach reviews fit the head (40 items), alpha still counts the 20 audit ones.
        result = calibrate(store, run_id=1)
        assert set(result.fitted.values()) == {40}
        assert result.head.fitted["queues"] == "audit, import, teach"
        on_head = agreement_report(store, bootstrap=0)
        assert {c["ceiling"]["n"] for c in on_head["dimensions"]} == {20}
        assert on_head["items_by_queue"] == {"audit": 20, "import": 0, "hard": 0, "teach": 20}
        # The same alpha with the teach reviews gone, on the run 1 labels.
        store.db.execute("DELETE FROM reviews WHERE queue = 'teach'")
        again = agreement_report(store, run_id=1, bootstrap=0)
        assert again["dimensions"] == before["dimensions"]
        # The next batch leaves out what the reviewer did, and reads the head's margins.
        store.save_reviews("ann", TEACH, [(i, d, truth[i]) for i in taught for d in dims])
        following = queues.teach_todo(store, result.run_id, set(sample) | set(taught))
        assert following and not set(following) & (set(sample) | set(taught))


def test_the_dashboard_says_which_reviews_alpha_counts():
    reviews = [
        ("i1", "d", "ann", 1, "audit"),
        ("i2", "d", "ann", 1, "hard"),
        ("i3", "d", "ann", 1, TEACH),
        ("i1", "d", "ann", 1, TEACH),  # also an audit review by ann: counted there
        ("i4", "d", "bob", 1, "import"),
    ]
    counts = queue_items(reviews)
    assert counts == {"audit": 1, "import": 1, "hard": 1, "teach": 1}
    lines = dashboard.counted_lines({"items_by_queue": counts})
    assert lines == [
        "alpha: 1 audit-sample and 1 imported item(s), not the audit sample only",
        "not counted: 1 hardest-first, 1 teach item(s)",
    ]
    assert dashboard.counted_lines({"items_by_queue": queue_items(reviews, "ann")})[0] == (
        "alpha: 1 audit-sample item(s) only"
    )
    assert all(len(line) <= 80 for line in lines)


@run_async
async def test_reviews_from_the_teach_queue_are_filed_as_teach(tmp_path, monkeypatch):
    from annotator.tui.app import make_app
    from annotator.tui.widgets.agreement_view import AgreementView
    from annotator.tui.widgets.review_view import ReviewView

    monkeypatch.chdir(tmp_path)
    project = fabricated_project(tmp_path, n=30)  # alice: 8 audit reviews, 1 hard
    rng = np.random.default_rng(2)
    with Store(project) as store:
        for (item_id,) in store.db.execute("SELECT item_id FROM annotations").fetchall():
            states = rng.normal(size=(1, N_EMBD)).astype("<f2").tobytes()
            store.db.execute(
                "UPDATE annotations SET hidden = ? WHERE item_id = ?", (states, item_id)
            )
        sample = queues.audit_order(store.item_ids())[:10]
    app = make_app(project.name, reviewer="alice", bootstrap=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        await pilot.press("r", *"10", "enter")
        review = app.main.query_one(ReviewView)
        assert review.audit_size == 10 and "AUDIT sample" in text_of(review)
        await pilot.press("t", "t")  # audit -> hardest first -> teach
        assert review.queue == TEACH and "TEACH the head (not in alpha)" in text_of(review)
        item = review.current
        assert item is not None and item not in sample and item not in review.todo
        assert not set(review.todo) & set(sample)
        await pilot.press("2", "enter")
        with Store(project) as store:
            assert [r for r in store.reviews() if r[0] == item] == [
                (item, "emotion", "alice", store.rubric().dimensions[0].values[1], TEACH)
            ]
        agreement = app.main.query_one(AgreementView)
        await pilot.press("g")
        await wait_for(
            pilot,
            lambda: (
                agreement.report is not None and agreement.report["items_by_queue"]["teach"] == 1
            ),
            what="the agreement to update",
        )
        await app.workers.wait_for_complete()
        assert "not counted: 1 hardest-first, 1 teach item(s)" in text_of(agreement)
        assert agreement.report["dimensions"][0]["ceiling"]["n"] == 8  # audit only
