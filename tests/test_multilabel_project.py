"""A multi-label dimension through a project: stored per-value decisions, `results` (a ";"
cell and a 0/1 column per value, spreadsheet-safe), `review import`/`export` of sets, and
`agree` with the MASI set distance. The project is written through the real store as the
engine writes it (the engine's per-value decisions are tested in test_multilabel.py)."""

import csv
import json

from conftest import run_cli, write_csv
from helpers.tui import run_async

from annotator.agreement import agreement
from annotator.data import Item
from annotator.project.store import Label, Store
from annotator.rubric import rubric_from_dict

VALUES = ["joy", "anger", "=odd", "neutral"]
RUBRIC = rubric_from_dict(
    {
        "name": "emo",
        "instructions": "Read the comment.",
        "inputs": [{"column": "text", "label": "COMMENT"}],
        "dimensions": [
            {"name": "emotions", "question": "Which?", "kind": "multi", "values": VALUES, "max": 2}
        ],
    },
    "test",
)
# Per item: each value's probability of yes, in VALUES order.
P_YES = {
    "a": [0.9, 0.2, 0.1, 0.1],
    "b": [0.1, 0.8, 0.7, 0.1],
    "c": [0.6, 0.7, 0.9, 0.2],  # three yes: max 2 keeps the two most probable
    "d": [0.1, 0.1, 0.6, 0.9],
    "e": [0.2, 0.1, 0.3, 0.4],  # none
}


def start_run(store: Store, item_ids: list[str], settings: dict):
    """The rubric, items `item_ids` and a run of a stand-in model, as `annotate` stores them."""
    store.bind_rubric(RUBRIC)
    store.add_items([Item(i, n, {"text": f"text {i}"}) for n, i in enumerate(item_ids)])
    run, _ = store.find_or_start_run(
        model_path="m.gguf",
        model_sha256="ab" * 32,
        rubric=RUBRIC,
        data_path="d.csv",
        data_sha256="cd" * 32,
        settings={"settings": settings, "backend": "cpu"},
    )
    return run


def make_project(path):
    with Store(path) as store:
        run = start_run(store, list(P_YES), {"n_ctx": 4096})
        for item_id, ps in P_YES.items():
            labels, probs = {}, {}
            for value, p in zip(VALUES, ps, strict=True):
                yes = p > 0.5
                labels[f"emotions.{value}"] = Label("yes" if yes else "no", max(p, 1 - p), 0.1)
                probs[f"emotions.{value}"] = [1 - p, p]
            store.save_annotation(run, item_id, labels, 3, 0, 0.01, probs=probs)
        store.record_skipped(run, [])
    return path


def test_other_tools_formats_refuse_multi_label_in_one_line(tmp_path):
    project = make_project(tmp_path / "p.db")
    out = tmp_path / "ls.json"
    done = run_cli("results", str(project), "--out", str(out), "--format", "labelstudio")
    assert done.returncode != 0 and not out.exists()
    assert "multi-label dimension 'emotions' is not supported" in done.stderr


def test_results_write_a_semicolon_cell_and_a_column_per_value(tmp_path):
    project = make_project(tmp_path / "p.db")
    out = tmp_path / "r.csv"
    done = run_cli("results", str(project), "--out", str(out), "--probs")
    assert done.returncode == 0, done.stderr
    rows = {r["id"]: r for r in csv.DictReader(out.open())}
    assert rows["a"]["emotions"] == "joy" and rows["e"]["emotions"] == ""
    assert rows["c"]["emotions"] == "anger;=odd"  # rubric order
    assert rows["d"]["emotions"] == "'=odd;neutral"  # a formula start is quoted
    assert rows["b"]["emotions_anger"] == "1" and rows["b"]["emotions_joy"] == "0"
    assert rows["c"]["emotions_joy"] == "0"  # a yes dropped by max 2
    assert float(rows["c"]["emotions_p_=odd"]) == 0.9
    jsonl = tmp_path / "r.jsonl"
    assert run_cli("results", str(project), "--out", str(jsonl)).returncode == 0
    first = json.loads(jsonl.read_text().splitlines()[2])
    assert first["emotions"] == ["anger", "=odd"] and first["emotions_joy"] == 0


def test_reviewed_sets_import_export_and_agree_with_masi(tmp_path):
    project = make_project(tmp_path / "p.db")
    ana = {"a": "joy", "b": "anger;=odd", "c": "anger", "d": "neutral", "e": "joy"}
    ben = {"a": "joy", "b": "anger", "c": "anger;=odd", "d": "neutral", "e": "neutral"}
    for name, labels in (("ana", ana), ("ben", ben)):
        rows = [{"id": i, "emotions": v} for i, v in labels.items()]
        path = write_csv(tmp_path / f"{name}.csv", rows)
        done = run_cli("review", "import", str(project), str(path), "--reviewer", name)
        assert done.returncode == 0, done.stderr
    bad = write_csv(tmp_path / "bad.csv", [{"id": "a", "emotions": "joy;anger;neutral"}])
    done = run_cli("review", "import", str(project), str(bad), "--reviewer", "cy")
    assert "bad.csv row 1: emotions:" in done.stderr and "allowed 0 to 2" in done.stderr

    done = run_cli("agree", str(project), "--json", "--bootstrap", "20")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["dimensions"][0]
    assert report["level"] == "masi"
    pair = next(c for c in report["comparisons"] if c["coders"] == ["ana", "ben"])
    dim = RUBRIC.dimensions[0]
    table = [[dim.parse_value(ana[i]) for i in "abcde"], [dim.parse_value(ben[i]) for i in "abcde"]]
    assert pair["alpha"] == agreement(dim, ["ana", "ben"], table, 0).alpha
    model = next(c for c in report["comparisons"] if c["coders"] == ["model", "ana"])
    model_sets = [("joy",), ("anger", "=odd"), ("anger", "=odd"), ("=odd", "neutral"), ()]
    want = agreement(dim, ["model", "ana"], [model_sets, table[0]], 0).alpha
    assert model["alpha"] == want and model["n"] == 5

    out = tmp_path / "reviewed.csv"
    done = run_cli("review", "export", str(project), "--out", str(out), "--reviewer", "ana")
    assert done.returncode == 0, done.stderr
    rows = {r["id"]: r for r in csv.DictReader(out.open())}
    assert rows["b"]["emotions"] == "anger;=odd" and rows["e"]["emotions"] == "joy"


@run_async
async def test_review_in_the_app_toggles_values_and_saves_the_set(tmp_path, monkeypatch):
    from helpers.tui import opened, text_of

    from annotator.tui.app import make_app
    from annotator.tui.widgets.review_view import ReviewView
    from annotator.tui.widgets.value_picker import ValuePicker

    monkeypatch.chdir(tmp_path)
    project = make_project(tmp_path / "p.db")
    app = make_app(project.name, reviewer="ana", bootstrap=20)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        await pilot.press("r", "enter")
        review = app.main.query_one(ReviewView)
        picker = review.query_one(ValuePicker)
        first = review.current
        assert first is not None and picker.value is None  # nothing toggled: no answer yet
        await pilot.press("enter")  # refused: the set is not chosen yet
        assert not review.revealed
        await pilot.press("1", "2", "4")  # joy, anger; a third is over max 2
        assert picker.value == ("joy", "anger")
        await pilot.press("1", "right", "right", "space")  # joy off; the cursor to =odd, on
        assert picker.value == ("anger", "=odd") and "[x] 3 =odd" in str(picker.render())
        await pilot.press("enter")
        assert review.revealed
        model = {"a": "joy", "b": "anger;=odd", "c": "anger;=odd", "d": "=odd;neutral", "e": "none"}
        assert f"you anger;=odd · model {model[first]} (p " in text_of(review)
        await pilot.press("enter")  # the next item: every value off again
        assert review.current != first and picker.value is None and not picker.chosen
        await pilot.press("2", "2", "enter")  # on and off again: the empty set, chosen
        assert review.revealed
    with Store(project) as store:
        saved = {(i, tuple(v)) for i, d, r, v, q in store.reviews() if d == "emotions"}
    assert (first, ("anger", "=odd")) in saved and len(saved) == 2
    assert any(v == () for _, v in saved)


def test_calibrate_fits_a_head_per_value_and_the_new_run_reads_as_sets(tmp_path):
    """Hidden states stored as the engine stores them (one row per value's decision); the
    reviewers' sets are readable from them (value i on: feature i high), the model's own
    per-value answers are not. The heads, one per value, recover the sets."""
    import numpy as np

    from annotator.calibration.calibrate import calibrate

    rng = np.random.default_rng(0)
    n_items, n_embd = 40, 16
    truth = {f"i{n}": tuple(v for v in VALUES if rng.random() < 0.4)[:2] for n in range(n_items)}
    path = tmp_path / "p.db"
    with Store(path) as store:
        run = start_run(store, list(truth), {"n_ctx": 4096, "hidden_layer": 5})
        for item_id, chosen in truth.items():
            state = rng.normal(0, 0.3, n_embd)
            state[[VALUES.index(v) for v in chosen]] += 3.0
            hidden = np.tile(state, (len(VALUES), 1)).astype("<f2").tobytes()
            labels = {f"emotions.{v}": Label("no", 0.6, 0.2) for v in VALUES}
            probs = {f"emotions.{v}": [0.6, 0.4] for v in VALUES}
            store.save_annotation(run, item_id, labels, 3, 0, 0.01, probs=probs, hidden=hidden)
        store.save_reviews("ana", "audit", [(i, "emotions", v) for i, v in truth.items()])
        result = calibrate(store)
        assert sorted(result.fitted) == sorted(f"emotions.{v}" for v in VALUES)
        from annotator.calibration.curve import learning_curves

        curves, _ = learning_curves(store, run_id=run, sizes=(20,), repeats=2)
        assert [c.dimension for c in curves] == [f"emotions.{v}" for v in VALUES]
        assert all(c.items == n_items for c in curves)
        outputs = store.outputs(result.run_id)
        from annotator.multilabel import multi_labels

        sets = {
            o.item_id: multi_labels(RUBRIC, o.labels, o.probs)["emotions"].value for o in outputs
        }
    agreeing = sum(sets[i] == truth[i] for i in truth)
    assert agreeing >= 0.8 * n_items  # leave-one-out labels, from separable states
    done = run_cli("agree", str(path), "--json", "--bootstrap", "0")
    report = json.loads(done.stdout)["dimensions"][0]
    assert report["level"] == "masi" and report["comparisons"][0]["alpha"] > 0.6


@run_async
async def test_browse_and_the_item_screen_show_sets(tmp_path, monkeypatch):
    """Browse shows a multi-label dimension's set (not a blank), sorts by it, a label filter
    finds a value inside a set, and the item screen shows the set too."""
    from helpers.tui import opened, text_of

    from annotator.tui.app import make_app
    from annotator.tui.screens.item import ItemScreen
    from annotator.tui.widgets.browse_view import BrowseView

    monkeypatch.chdir(tmp_path)
    project = make_project(tmp_path / "p.db")
    app = make_app(project.name, reviewer="ana", bootstrap=20)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        await pilot.press("b")
        browse = app.main.query_one(BrowseView)
        shown = {
            row.item_id: str(browse.table.get_row(row.item_id)[1]) for row in browse._visible()
        }
        assert shown == {
            "a": "joy",
            "b": "anger;=odd",
            "c": "anger;=odd",
            "d": "=odd;neutral",
            "e": "none",
        }
        browse.sort = "label"  # by the set's values in rubric order; the empty set first
        assert [r.item_id for r in browse._visible()] == ["e", "a", "b", "c", "d"]
        browse.label_query = "emotions=anger"
        assert {r.item_id for r in browse._visible()} == {"b", "c"}
        browse.label_query = ""
        app.push_screen(ItemScreen("b"))
        await pilot.pause()
        assert "emotions: anger;=odd" in text_of(app.screen)
