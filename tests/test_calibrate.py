"""`annotator calibrate` end to end with the real default model: stored distributions and
hidden states, a head fitted on reviews, leave-one-out labels, and the head shipped in a file
(on the embedded model a head file of a few kB: tests/test_head_file.py)."""

import csv
import json
import re

import numpy as np
import pytest
from conftest import SAMPLES, run_cli, write_csv

from annotator.calibration.heads import fit_dimension
from annotator.calibration.nominal import fit_nominal
from annotator.modelfile import KEY_CALIBRATION, read_model_info
from annotator.project.store import Store

RUBRIC = """
name = "tone"
instructions = "Read the comment and rate it."
[[inputs]]
column = "text"
label = "COMMENT"
[[dimensions]]
name = "positivity"
question = "How positive is the comment?"
scale = "ordinal"
values = [1, 2, 3]
anchors = { 1 = "negative", 3 = "positive" }
[[dimensions]]
name = "kind"
question = "What kind of comment is it?"
scale = "nominal"
values = ["praise", "complaint", "other"]
"""
N_CTX = ["--n-ctx", "1024"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calibrate")
    rubric = tmp / "rubric.toml"
    rubric.write_text(RUBRIC)
    items = list(csv.DictReader((SAMPLES / "goemotions" / "items.csv").open(encoding="utf-8")))
    data = write_csv(tmp / "items.csv", items, ["id", "text"])
    db = tmp / "p.db"
    done = run_cli("annotate", str(data), "--rubric", str(rubric), "--project", str(db), *N_CTX)
    assert done.returncode == 0, done.stderr
    # A reviewer labels 30 of the 40 items; 10 stay unreviewed. The labels only need to vary:
    # this checks the mechanics (quality is bench/quality.py's job).
    reviewed = items[:30]
    kinds = ("praise", "complaint", "other")
    rows = [
        {"id": r["id"], "positivity": 1 + len(r["text"]) % 3, "kind": kinds[len(r["text"]) % 2]}
        for r in reviewed
    ]
    review = write_csv(tmp / "review.csv", rows, ["id", "positivity", "kind"])
    assert run_cli("review", "import", str(db), str(review), "--reviewer", "ann").returncode == 0
    return tmp, db, items, rows


def test_every_value_probability_and_hidden_state_are_stored(project):
    tmp, db, _, _ = project
    with Store(db) as store:
        outputs = store.outputs(1)
        readout = store.run(1).settings["readout"]
    assert len(outputs) == 40
    for o in outputs:
        assert set(o.probs) == {"positivity", "kind"}
        assert sum(o.probs["positivity"]) == pytest.approx(1.0) and len(o.probs["kind"]) == 3
        assert len(o.hidden) == 2 * 640 * 2  # two dimensions x n_embd, float16
    assert readout["rules"] == {"positivity": "median", "kind": "argmax"}  # --rule auto
    assert set(readout["priors"]) == {"positivity", "kind"}  # content-free, on record
    out = tmp / "probs.csv"
    assert run_cli("results", str(db), "--probs", "--out", str(out)).returncode == 0
    row = next(csv.DictReader(out.open()))
    assert {"positivity_p_1", "positivity_p_3", "kind_p_other"} <= set(row)


def test_calibrate_fits_a_head_with_leave_one_out_labels_and_ships_it(project):
    tmp, db, items, reviews = project
    model = tmp / "tone-head.gguf"
    done = run_cli("calibrate", str(db), "--reviewer", "ann", "--out", str(model))
    assert done.returncode == 0, done.stderr
    assert "positivity: head fitted on 30 reviewed items" in done.stderr
    assert "kind: logistic head fitted on 30 reviewed items; 5-fold" in done.stderr
    assert re.search(
        r"kind: .*; accuracy \d\.\d{3}, the model's own answer \d\.\d{3}\n", done.stderr
    )
    # On the embedded model: a head file of a few kB, not a 253 MB copy (tests/test_head_file.py).
    assert f"wrote {model}, head file (" in done.stderr and model.stat().st_size < 1_000_000
    with Store(db) as store:
        run = store.run()
        assert run.id == 2 and run.settings["readout"]["derived_from"] == 1
        derived = {o.item_id: o for o in store.outputs(2)}
        stored = {o.item_id: o for o in store.outputs(1)}
    info = read_model_info(model)
    assert KEY_CALIBRATION in info.metadata and info.rubric is not None
    head = info.head(info.rubric)
    dim = info.rubric.dimension("positivity")
    hidden = {i: np.frombuffer(o.hidden, dtype="<f2").reshape(2, -1) for i, o in stored.items()}
    # Reviewed items: the label a head fitted without them gives (leave-one-out).
    ids = sorted(r["id"] for r in reviews)
    targets = {r["id"]: r["positivity"] - 1 for r in reviews}
    fit = fit_dimension(
        dim,
        np.stack([hidden[i] for i in ids]),
        [float(targets[i]) for i in ids],
        [targets[i] for i in ids],
    )
    assert [dim.values.index(derived[i].labels["positivity"].value) for i in ids] == fit.loo_labels
    # The nominal dimension: a logistic head, out-of-fold labels for its reviewed items.
    kind = info.rubric.dimension("kind")
    given = {r["id"]: [kind.values.index(r["kind"])] for r in reviews}
    nominal = fit_nominal(
        kind,
        np.stack([hidden[i] for i in ids]),
        [stored[i].probs["kind"] for i in ids],
        [given[i] for i in ids],
    )
    assert [kind.values.index(derived[i].labels["kind"].value) for i in ids] == nominal.loo_labels
    assert head.dims["kind"].classes == (0, 1)  # "other" was never given
    # Unreviewed items: the shipped head's label.
    unreviewed = [r["id"] for r in items[30:]]
    for i in unreviewed:
        assert (
            derived[i].labels["positivity"].value == dim.values[head.choose(dim, hidden[i], [])[0]]
        )
        chosen, margin = head.choose(kind, hidden[i], stored[i].probs["kind"])
        assert derived[i].labels["kind"].value == kind.values[chosen]
        assert derived[i].labels["kind"].margin == pytest.approx(margin)
    # The same calibration again reuses its run: results are byte-identical.
    again = run_cli("calibrate", str(db), "--reviewer", "ann", "--run", "1")
    assert again.returncode == 0 and "run 2 from run 1" in again.stderr
    # A field laptop runs the one file on new items: the head applies, labels match.
    data = write_csv(tmp / "new.csv", items[30:], ["id", "text"])
    field = tmp / "field.db"
    done = run_cli("annotate", str(data), "--model", str(model), "--project", str(field), *N_CTX)
    assert done.returncode == 0, done.stderr
    assert "calibration head from the model file on kind, positivity" in done.stderr
    with Store(field) as store:
        shipped = {o.item_id: o.labels for o in store.outputs(1)}
        assert store.run(1).settings["readout"]["head"]["sha256"] == head.sha256
    for name in ("positivity", "kind"):
        assert {i: shipped[i][name].value for i in unreviewed} == {
            i: derived[i].labels[name].value for i in unreviewed
        }
    shown = run_cli("inspect", str(model))
    assert shown.returncode == 0
    assert "calibration   head on kind, positivity (30 reviewed items" in shown.stdout


def test_label_free_batch_prior_and_refusals(project):
    _, db, _, _ = project
    done = run_cli("calibrate", str(db), "--run", "1", "--no-head", "--prior", "batch")
    assert done.returncode == 0, done.stderr
    with Store(db) as store:
        readout = store.run().settings["readout"]
    assert readout["prior"] == "batch" and readout["batch_items"] == 40 and "head" not in readout
    alone = run_cli("calibrate", str(db), "--full")
    assert alone.returncode == 2 and "--full needs --out" in alone.stderr
    missing = run_cli("calibrate", str(db), "--reviewer", "nobody")
    assert (
        missing.returncode == 1
        and "no audit, imported or teach reviews by 'nobody'" in missing.stderr
    )
    assert json.loads(run_cli("agree", str(db), "--json", "--bootstrap", "0").stdout)["run"] >= 2


def test_a_run_without_middle_block_states_is_refused(project, tmp_path):
    """Runs from before the middle block was read stored final hidden states: a head fitted
    on them would be applied to other features, so calibrate asks for a new annotate pass."""
    import shutil
    import sqlite3

    _, db, _, _ = project
    with Store(db) as store:
        assert store.run(1).settings["settings"]["hidden_layer"] == 8  # Gemma 3 270M: 18 blocks
    old = tmp_path / "old.db"
    shutil.copy(db, old)
    con = sqlite3.connect(old)
    (settings,) = con.execute("SELECT settings FROM runs WHERE id = 1").fetchone()
    settings = json.loads(settings)
    del settings["settings"]["hidden_layer"]
    con.execute("UPDATE runs SET settings = ? WHERE id = 1", (json.dumps(settings),))
    con.commit()
    con.close()
    refused = run_cli("calibrate", str(old), "--run", "1")
    assert refused.returncode == 1 and "annotate the data again" in refused.stderr


def test_a_calibration_after_a_resume_covers_every_item_and_stale_runs_are_not_latest(
    tmp_path, default_model
):
    """Label 5 of 10 items, calibrate, finish the other 5, calibrate again: the new run covers
    all 10 (it is keyed by the parent's items, not only by the run and readout), and a derived
    run that holds only part of its parent's items is never the latest."""
    from annotator.calibration.calibrate import calibrate

    (tmp_path / "rubric.toml").write_text(RUBRIC)
    (tmp_path / "model.gguf").symlink_to(default_model)
    items = list(csv.DictReader((SAMPLES / "goemotions" / "items.csv").open(encoding="utf-8")))[:10]
    half = write_csv(tmp_path / "half.csv", items[:5], ["id", "text"])
    full = write_csv(tmp_path / "full.csv", items, ["id", "text"])
    db = tmp_path / "p.db"
    for data in (half, None, full):
        if data is None:  # between the two annotate passes: a calibration of the first 5
            with Store(db) as store:
                assert calibrate(store, fit_head=False).run_id == 2
                assert store.run().id == 2 and len(store.outputs(2)) == 5
            continue
        # Relative paths, from the project's folder, as a user types them.
        done = run_cli(
            "annotate",
            data.name,
            "--rubric",
            "rubric.toml",
            "--project",
            "p.db",
            "--model",
            "model.gguf",
            *N_CTX,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
    assert "run 1 (resumed)" in done.stderr
    with Store(db) as store:
        assert len(store.outputs(1)) == 10
        # Recorded absolute, so `calibrate --out` finds the model from any folder.
        assert store.run(1).model_path == str(tmp_path.resolve() / "model.gguf")
        assert store.run(1).data_path == str(tmp_path.resolve() / "half.csv")
        # Run 2 holds 5 of its parent's 10 items now: stale, so the latest is run 1 again.
        assert store.run().id == 1 and store.runs()[-1].id == 1
        again = calibrate(store, fit_head=False)
        assert again.parent == 1 and again.run_id == 3 and len(store.outputs(3)) == 10
        assert store.run().id == 3
        other = calibrate(store, fit_head=False, rule="argmax")
        assert other.run_id == 4 and store.run().id == 4
        # The first derivation again: its run is reused, and is the latest once more.
        assert calibrate(store, run_id=1, fit_head=False).run_id == 3
        assert store.run().id == 3 and store.runs()[-1].id == 3
        assert sorted(r.id for r in store.runs()) == [1, 2, 3, 4]
    shown = run_cli("results", str(db))
    assert shown.returncode == 0 and all(i["id"] in shown.stdout for i in items)


def test_calibrate_out_copies_only_the_runs_own_model_file(project, tmp_path, default_model):
    """`--out` copies the file now at the run's model path: refused, naming both digests, when
    that is not the run's file (replaced, or a relative path read from another folder), before
    anything is written. Runs of older projects recorded relative paths: they still work from
    the folder they were recorded in."""
    import shutil
    import sqlite3

    from test_calibration import tiny_model_file

    _, db, _, _ = project
    copy = tmp_path / "p.db"
    shutil.copy(db, copy)
    con = sqlite3.connect(copy)
    con.execute("UPDATE runs SET model_path = 'model.gguf' WHERE id = 1")
    con.commit()
    con.close()
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    (good / "model.gguf").symlink_to(default_model)
    tiny_model_file(bad / "model.gguf", {"general.name": "another model"})
    with Store(copy) as store:
        want = store.run(1).model_sha256
        runs = len(store.runs())
    from annotator.modelfile import read_sha256

    refused = run_cli(
        "calibrate", str(copy), "--run", "1", "--out", str(tmp_path / "x.gguf"), cwd=bad
    )
    assert refused.returncode == 1
    line = refused.stderr.strip()
    assert "\n" not in line and line.startswith("annotator: error: bad/model.gguf: sha256 ")
    assert read_sha256(bad / "model.gguf")[:12] in line and want[:12] in line
    assert not (tmp_path / "x.gguf").exists()
    with Store(copy) as store:
        assert len(store.runs()) == runs  # refused before calibrating
    # A file replaced at an absolute path: the same refusal, the path shown from the project.
    con = sqlite3.connect(copy)
    con.execute("UPDATE runs SET model_path = ? WHERE id = 1", (str(bad / "model.gguf"),))
    con.commit()
    con.close()
    refused = run_cli("calibrate", str(copy), "--run", "1", "--out", str(tmp_path / "x.gguf"))
    assert refused.returncode == 1 and "error: bad/model.gguf: sha256 " in refused.stderr
    con = sqlite3.connect(copy)
    con.execute("UPDATE runs SET model_path = 'model.gguf' WHERE id = 1")
    con.commit()
    con.close()
    done = run_cli(
        "calibrate", str(copy), "--run", "1", "--out", str(tmp_path / "x.gguf"), cwd=good
    )
    assert done.returncode == 0, done.stderr
    assert KEY_CALIBRATION in read_model_info(tmp_path / "x.gguf").metadata


def test_a_head_for_another_models_n_embd_is_refused_before_any_item(tmp_path, default_model):
    """A model file whose head has another n_embd than the model (here 64, the model's is
    640): one line naming the file and key when the job opens, not a numpy traceback on the
    first item. The file is a head file on the embedded model (the check is the engine's,
    whatever carries the head; a head file costs no copy of the model)."""
    from test_calibration import synthetic, tiny_model_file

    from annotator.calibration.heads import Head
    from annotator.errors import AnnotatorError
    from annotator.inference import prompt
    from annotator.jobs.job import open_job
    from annotator.modelfile import (
        HEAD_FILE_KIND,
        KEY_BASE_SHA256,
        KEY_KIND,
        KEY_PROMPT_FORMAT,
        KEY_RUBRIC,
        sha256_file,
    )
    from annotator.rubric import load_rubric

    (tmp_path / "rubric.toml").write_text(RUBRIC)
    rubric = load_rubric(tmp_path / "rubric.toml")
    dim = rubric.dimension("positivity")
    states, labels = synthetic(40, signal=1.0)
    head = Head(
        {"positivity": fit_dimension(dim, states, labels.astype(float), list(labels)).head},
        64,
        {"items": 40},
        8,
    )
    out = tiny_model_file(
        tmp_path / "other-head.gguf",
        {
            "adapter.type": "lora",
            KEY_KIND: HEAD_FILE_KIND,
            KEY_BASE_SHA256: sha256_file(default_model),
            KEY_CALIBRATION: head.to_json(),
            KEY_RUBRIC: rubric.canonical_json(),
            KEY_PROMPT_FORMAT: str(prompt.PROMPT_FORMAT),
        },
    )
    items = list(csv.DictReader((SAMPLES / "goemotions" / "items.csv").open(encoding="utf-8")))
    data = write_csv(tmp_path / "two.csv", items[:2], ["id", "text"])
    with pytest.raises(AnnotatorError) as caught:
        job = open_job(data, tmp_path / "p.db", model=out)
        try:
            list(job.run())
        finally:
            job.close()
    assert str(caught.value) == (
        f"{out}: metadata {KEY_CALIBRATION}: the head has n_embd 64, "
        "the model 640; it was fitted on another model"
    )
