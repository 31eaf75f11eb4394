"""Field laptops: `annotator project split` and `merge`."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import SAMPLES, run_cli, write_csv

from annotator.data import Item, read_items
from annotator.errors import AnnotatorError
from annotator.project.shares import merge, split
from annotator.project.store import Label, Store
from annotator.rubric import load_rubric

ITEMS = SAMPLES / "goemotions" / "items.csv"
RUBRIC = SAMPLES / "goemotions" / "rubric.toml"
SHA = "ab" * 32


def _share(
    path: Path,
    ids: list[str],
    labels: dict[str, str],
    *,
    sha: str = SHA,
    rubric: Path = RUBRIC,
    reviews: list[tuple] = (),
) -> Path:
    """A project as a laptop leaves it: items, one run, labels and reviews."""
    r = load_rubric(rubric)
    with Store(path) as store:
        store.bind_rubric(r)
        store.add_items([Item(i, int(i), {"text": f"text {i}"}) for i in ids])
        run, _ = store.find_or_start_run(
            model_path="m.gguf",
            model_sha256=sha,
            rubric=r,
            data_path=str(path),
            data_sha256="cd" * 32,
            settings={"settings": {"n_ctx": 4096}, "backend": "cpu"},
        )
        for item_id, value in labels.items():
            store.save_annotation(run, item_id, {"emotion": Label(value, 0.5, 0.1)}, 3, 0, 0.01)
        store.record_skipped(run, [])
        for reviewer, queue, rows in reviews:
            store.save_reviews(reviewer, queue, rows)
    return path


def test_merge_joins_runs_keeps_reviewers_and_is_idempotent(tmp_path):
    a = _share(
        tmp_path / "a.db",
        ["1", "2"],
        {"1": "joy", "2": "anger"},
        reviews=[("ana", "audit", [("1", "emotion", "joy")])],
    )
    b = _share(
        tmp_path / "b.db",
        ["3", "4"],
        {"3": "fear", "4": "joy"},
        reviews=[
            ("ben", "audit", [("3", "emotion", "fear")]),
            ("ben", "hard", [("4", "emotion", "love")]),
        ],
    )
    into = tmp_path / "p.db"
    report = merge([a, b], into)
    assert (report.runs_new, report.runs_joined, report.labels, report.reviews) == (1, 1, 4, 3)
    with Store(into) as store:
        assert [r.id for r in store.runs()] == [1]
        assert [(i, labels["emotion"].value) for i, labels, _ in store.annotations(1)] == [
            ("1", "joy"),
            ("2", "anger"),
            ("3", "fear"),
            ("4", "joy"),
        ]
        assert store.reviewers() == ["ana", "ben"]
        assert ("4", "emotion", "ben", "love", "hard") in store.reviews()
    # The same shares again: nothing new, nothing doubled.
    again = merge([a, b], into)
    assert (again.labels, again.labels_already, again.reviews, again.runs_new) == (0, 4, 0, 0)


def test_an_item_labelled_twice_is_kept_by_run(tmp_path):
    a = _share(tmp_path / "a.db", ["1", "2"], {"1": "joy", "2": "anger"})
    b = _share(tmp_path / "b.db", ["2", "3"], {"2": "fear", "3": "joy"})
    into = tmp_path / "p.db"
    report = merge([a, b], into)
    assert report.kept_by_run == {2: 1}
    with Store(into) as store:
        first = {i: labels["emotion"].value for i, labels, _ in store.annotations(1)}
        kept = {i: labels["emotion"].value for i, labels, _ in store.annotations(2)}
        assert first == {"1": "joy", "2": "anger", "3": "joy"}
        assert kept == {"2": "fear"}
        assert store.run(2).settings["merged_from"]["run"] == 1
    assert merge([b], into).kept_by_run == {}  # merged again: already there
    with Store(into) as store:
        assert len(store.runs()) == 2


def test_merge_refuses_another_rubric_or_model_naming_the_file(tmp_path):
    a = _share(tmp_path / "a.db", ["1"], {"1": "joy"})
    other_model = _share(tmp_path / "other-model.db", ["2"], {"2": "joy"}, sha="ef" * 32)
    other_rubric = tmp_path / "other-rubric.db"
    with Store(other_rubric) as store:
        store.bind_rubric(load_rubric(SAMPLES / "newsroom" / "rubric.toml"))
    into = tmp_path / "p.db"
    for bad in (other_model, other_rubric):
        with pytest.raises(AnnotatorError) as caught:
            merge([a, bad], into)
        message = str(caught.value)
        assert message.startswith(str(bad)) and "\n" not in message
    with Store(into) as store:  # refused before anything was written
        assert store.runs() == [] and store.item_ids() == set()
    done = run_cli("project", "merge", str(a), str(other_model), "--into", str(into))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"annotator: error: {other_model}: model sha256 "
        f"{'ef' * 6} is not the merged project's {'ab' * 6}; not merged"
    )


def test_merge_copies_columns_it_does_not_know(tmp_path):
    """Columns a later migration adds to annotations travel without code here (m003's probs
    and hidden did; this one stands for the next)."""
    a = _share(tmp_path / "a.db", ["1"], {"1": "joy"})
    into = tmp_path / "p.db"
    merge([a], into)  # creates the target with today's schema
    for path in (a, into):
        db = sqlite3.connect(path)
        db.execute("ALTER TABLE annotations ADD COLUMN future_col TEXT")
        db.commit()
        db.close()
    b = _share(tmp_path / "b.db", ["2"], {"2": "fear"})
    db = sqlite3.connect(b)
    db.execute("ALTER TABLE annotations ADD COLUMN future_col TEXT")
    db.execute("UPDATE annotations SET future_col = '[0.25, 0.75]'")
    db.commit()
    db.close()
    merge([b], into)
    db = sqlite3.connect(into)
    assert db.execute("SELECT future_col FROM annotations WHERE item_id = '2'").fetchone() == (
        "[0.25, 0.75]",
    )
    db.close()


def test_split_fixes_rubric_model_and_original_rows(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF not really a model")
    report = split(ITEMS, 3, tmp_path / "shares", rubric_path=RUBRIC, model=model)
    _, items, _ = read_items(ITEMS, ["text"])
    assert [s.items for s in report.shares] == [14, 13, 13]
    seen = []
    for share in report.shares:
        with Store(share.project) as store:
            assert store.rubric().hash == load_rubric(RUBRIC).hash
            assert store.fixed_model_sha256() == report.model_sha256
            seen += store.items()
        _, share_items, _ = read_items(share.data, ["text"])
        assert [i.fields for i in share_items] == [
            i.fields for i in items if i.id in {s.id for s in share_items}
        ]
    assert seen == items  # ids, original row numbers and text
    with pytest.raises(AnnotatorError, match="already exists"):
        split(ITEMS, 3, tmp_path / "shares", rubric_path=RUBRIC, model=model)


@pytest.mark.long
def test_split_annotate_review_merge_equals_one_project(tmp_path, default_model):
    """Two laptops: each annotates and reviews its share; the merged project's results are the
    single project's, byte for byte, and agree sees both laptops' reviewers."""
    one = tmp_path / "one.db"
    done = run_cli("annotate", str(ITEMS), "--rubric", str(RUBRIC), "--project", str(one))
    assert done.returncode == 0, done.stderr
    done = run_cli(
        "project",
        "split",
        str(ITEMS),
        "--parts",
        "2",
        "--out",
        str(tmp_path / "s"),
        "--rubric",
        str(RUBRIC),
    )
    assert done.returncode == 0, done.stderr
    shares = [tmp_path / "s" / f"share-{k}" for k in (1, 2)]
    _, items, _ = read_items(ITEMS, ["text"])
    for k, share in enumerate(shares):
        done = run_cli(
            "annotate",
            f"{share}.csv",
            "--project",
            f"{share}.db",
            "--rubric",
            str(RUBRIC),
            "--threads",
            "2",
        )
        assert done.returncode == 0, done.stderr
        # Both reviewers label the first items of each share (so they can be compared).
        ids = [i.id for i in items[k * 20 : k * 20 + 6]]
        for name, value in (("ana", "joy"), (f"laptop{k + 1}", "neutral")):
            labels = write_csv(
                tmp_path / f"{name}{k}.csv", [{"id": i, "emotion": value} for i in ids]
            )
            done = run_cli("review", "import", f"{share}.db", str(labels), "--reviewer", name)
            assert done.returncode == 0, done.stderr
    # A share annotated with another model is refused: the share fixes it.
    other = shutil.copy(SAMPLES / "goemotions" / "goemotions-lora.gguf", tmp_path / "other.gguf")
    done = run_cli("annotate", f"{shares[0]}.csv", "--project", f"{shares[0]}.db", "--model", other)
    assert done.returncode == 1 and "fixed to model sha256" in done.stderr

    merged = tmp_path / "merged.db"
    done = run_cli("project", "merge", *(f"{s}.db" for s in shares), "--into", str(merged))
    assert done.returncode == 0, done.stderr
    assert "runs 1 new + 1 joined" in done.stderr
    for project, out in ((one, "one.csv"), (merged, "merged.csv")):
        done = run_cli("results", str(project), "--out", str(tmp_path / out))
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    done = run_cli("agree", str(merged), "--json", "--bootstrap", "0")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["reviewers"] == ["ana", "laptop1", "laptop2"]
    coders = [c["coders"] for c in report["dimensions"][0]["comparisons"]]
    assert ["ana", "laptop1", "laptop2"] in coders
    ana_vs_all = next(
        c
        for c in report["dimensions"][0]["comparisons"]
        if c["coders"] == ["ana", "laptop1", "laptop2"]
    )
    assert ana_vs_all["n"] == 12  # ana's reviews from both laptops, side by side


# -- shares round-trip exactly (issue 21) ------------------------------------------------------

# Items a spreadsheet neutraliser or a CSV writer would alter: leading = + - @ and tabs, quotes,
# commas, newlines, CRLF and a lone CR, non-ASCII, edge spaces and one field of about 100 kB.
HOSTILE = [
    ("big", "- " + "a long line of text, " * 4700),
    ("1", "- a bullet point list"),
    ("@4", "=SUM(A1)"),
    ("+7", "+ plus\tand a tab"),
    ("-x", '"quoted", with a comma\nand a newline,\r\na CRLF\rand a lone CR'),
    ("é/ü", "  naïve café — 日本語 😀 \u2028 'quote first "),
    ("-3", "\t@mention"),
]


def _hostile(path: Path) -> Path:
    if path.suffix == ".jsonl":
        path.write_text(
            "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in HOSTILE), encoding="utf-8"
        )
        return path
    return (
        write_csv(path, [{"id": i, "text": t} for i, t in HOSTILE])
        if path.suffix == ".csv"
        else _tsv(path)
    )


def _tsv(path: Path) -> Path:
    import csv

    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["id", "text"])
        writer.writerows(HOSTILE)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_share_files_hold_every_text_and_id_exactly(tmp_path, suffix):
    """A share's data file is read back by `annotate` on the laptop: nothing in it may be
    neutralised for a spreadsheet or mangled by the writer."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF not really a model")
    data = _hostile(tmp_path / f"items{suffix}")
    _, items, skipped = read_items(data, ["text"])
    assert skipped == [] and [(i.id, i.fields["text"]) for i in items] == HOSTILE
    report = split(data, 2, tmp_path / "s", rubric_path=RUBRIC, model=model)
    got: list[Item] = []
    for share in report.shares:
        _, share_items, share_skipped = read_items(share.data, ["text"])
        assert share_skipped == []
        with Store(share.project) as store:
            stored = store.items()
        assert [(i.id, i.fields) for i in share_items] == [(i.id, i.fields) for i in stored]
        got += stored
    assert got == items


# A small rubric and context keep the real model's passes short (the 100 kB item is cut).
SMALL_RUBRIC = """
name = "lists"
instructions = "Read the text. Say whether it is a list."
[[inputs]]
column = "text"
label = "TEXT"
[[dimensions]]
name = "list"
question = "Is the text a list?"
scale = "nominal"
values = ["yes", "no"]
"""


def _annotate(data: Path, project: Path, rubric: Path):
    """`annotate DATA --project PROJECT --rubric RUBRIC --n-ctx 256 --threads 1`, in this process."""
    from annotator.inference.backend import EngineSettings
    from annotator.jobs.job import open_job

    job = open_job(data, project, rubric, settings=EngineSettings(n_ctx=256, n_threads=1))
    try:
        for _ in job.run():
            pass
        return job.summary
    finally:
        job.close()


def _results(project: Path, out: Path) -> bytes:
    """`annotator results PROJECT --out OUT` (.csv: neutralised for spreadsheets; .jsonl: exact)."""
    from annotator.project.results import result_rows, write_results

    with Store(project) as store:
        rubric = store.rubric()
        write_results(out, rubric, result_rows(rubric, store.outputs(store.run().id), True))
    return out.read_bytes()


@pytest.fixture(scope="module")
def hostile_field(tmp_path_factory, default_model):
    """The hostile items annotated in one project, and split into two shares, each annotated
    on its own (as two laptops would) with the real embedded model."""
    tmp = tmp_path_factory.mktemp("hostile")
    rubric = tmp / "rubric.toml"
    rubric.write_text(SMALL_RUBRIC, encoding="utf-8")
    data = _hostile(tmp / "items.csv")
    one = tmp / "one.db"
    assert _annotate(data, one, rubric).done_now == len(HOSTILE)
    report = split(data, 2, tmp / "shares", rubric_path=rubric)
    summaries = [_annotate(share.data, share.project, rubric) for share in report.shares]
    return rubric, data, one, report, summaries


def test_hostile_items_split_annotate_merge_equal_one_project(hostile_field, tmp_path):
    """Split -> annotate each share -> merge gives the single project byte for byte: the
    same items (ids, rows, text) and the same results file."""
    _, _, one, report, summaries = hostile_field
    for share, summary in zip(report.shares, summaries, strict=True):
        assert (summary.done_now, summary.skipped) == (share.items, 0)  # nothing "other text"
    merged = tmp_path / "merged.db"
    merge([s.project for s in report.shares], merged)
    with Store(one) as a, Store(merged) as b:
        assert b.items() == a.items()
        assert len(b.runs()) == 1
    assert _results(merged, tmp_path / "merged.csv") == _results(one, tmp_path / "one.csv")
    assert _results(merged, tmp_path / "merged.jsonl") == _results(one, tmp_path / "one.jsonl")


def test_shares_from_other_machines_merge_into_one_run(hostile_field, tmp_path, monkeypatch):
    """Laptop 2 has another backend, other library versions and content-free priors that
    differ in the last digits (another CPU): its share still joins laptop 1's run, and
    `results` on the merged project shows every item, as the single project does."""
    from annotator.inference.engine import Engine

    rubric, data, one, first, _ = hostile_field
    report = split(data, 2, tmp_path / "shares", rubric_path=rubric)
    described = Engine.describe

    def other_machine(self):
        facts = described(self)
        facts["backend"], facts["backend_reason"] = "cuda", "another machine"
        facts["versions"] = {**facts["versions"], "llama-cpp-python": "0.0.0+other"}
        priors = facts["readout"]["priors"]
        facts["readout"]["priors"] = {
            k: [round(p * 1.000001, 6) for p in v] for k, v in priors.items()
        }
        return facts

    monkeypatch.setattr(Engine, "describe", other_machine)
    share = report.shares[1]
    assert _annotate(share.data, share.project, rubric).done_now == share.items
    merged = tmp_path / "merged.db"
    done = merge([first.shares[0].project, report.shares[1].project], merged)
    assert (done.runs_new, done.runs_joined, done.kept_by_run) == (1, 1, {})
    with Store(merged) as store:
        [run] = store.runs()
        assert len(store.outputs(run.id)) == len(HOSTILE)
        machines = store.run_machines(run.id)
        assert sorted(source for source, _ in machines) == ["share-1.db", "share-2.db"]
        other = next(facts for source, facts in machines if source == "share-2.db")
        assert other["backend"] == "cuda"
        assert other["versions"]["llama-cpp-python"] == "0.0.0+other"
    assert _results(merged, tmp_path / "merged.csv") == _results(one, tmp_path / "one.csv")
