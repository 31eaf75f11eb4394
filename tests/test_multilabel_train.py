"""A multi-label rubric through `annotator train` on the tiny model (a yes/no answer per value,
trained from ";"-joined cells), and on through export and annotate with the exported file."""

from __future__ import annotations  # noqa: I001  (`import train` must precede torch)

import json
import random

import annotator.train  # noqa: F401  (first, before torch: OpenMP wait policy and hub settings)

import pytest
from helpers.train import WORDS, tiny_dir, write_labeled

from annotator.rubric import load_rubric
from conftest import offline_site, run_cli

TOML = """name = "tags"
instructions = "Read the note. Label it."
[[inputs]]
column = "text"
label = "NOTE"
[[dimensions]]
name = "topics"
question = "Which topics does the note touch?"
kind = "multi"
values = ["food", "travel", "work"]
max = 2
[[dimensions]]
name = "tone"
question = "What is the tone?"
scale = "nominal"
values = ["calm", "angry"]
"""
FAST = ["--batch-size", "4", "--micro-batch-size", "2", "--max-steps", "3", "--eval-every", "2"]
FAST += ["--lr", "0.02", "--warmup", "0", "--lora-r", "4", "--lora-alpha", "8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("multi-train")
    (work / "rubric.toml").write_text(TOML)
    rng = random.Random(3)
    rows = [
        {
            "id": f"n{i}",
            "text": " ".join(rng.choices(WORDS, k=8)),
            "topics": ";".join(rng.sample(["food", "travel", "work"], k=rng.choice([0, 1, 2]))),
            "tone": rng.choice(["calm", "angry"]),
        }
        for i in range(16)
    ]
    rows.append({"id": "bad", "text": "x", "topics": "food;travel;work", "tone": "calm"})
    write_labeled(work / "a.csv", rows)
    offline_site(work / "offline_site")
    done = run_cli(
        "train", "--base", str(tiny_dir()), "--data", str(work / "a.csv"),
        "--rubric", str(work / "rubric.toml"), "--out", str(work / "run"), *FAST,
        env={"PYTHONPATH": str(work / "offline_site"), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return work, done


def test_train_learns_a_yes_no_answer_per_value_and_records_the_rubric(trained):
    work, done = trained
    run_dir = work / "run"
    rubric = load_rubric(work / "rubric.toml")
    prov = json.loads((run_dir / "merged" / "annotator_provenance.json").read_text())
    assert json.loads(prov["rubric"]) == rubric.to_dict()  # the rubric as written, not expanded
    held_out = [json.loads(line) for line in (run_dir / "validation.jsonl").open()]
    assert held_out and all(r["topics.food"] in ("yes", "no") for r in held_out)
    assert "topics: 'food;travel;work' has 3 values; allowed 0 to 2" in done.stderr
    log = (run_dir / "train.log").read_text()
    assert "topics.travel" in log  # validated per value


@pytest.mark.long
def test_the_trained_run_exports_and_annotates_sets(trained):
    """Export's drift check compares value by value; the file carries the rubric as written
    and `annotate` with it alone labels sets that `results` writes."""
    work, _ = trained
    out = work / "tiny.gguf"
    done = run_cli(
        "export", str(work / "run" / "merged"), "--out", str(out), "--quant", "q8_0",
        "--threads", "1", "--min-agreement", "0", "--bootstrap", "50",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    project = work / "exported.db"
    labelled = run_cli(
        "annotate", str(work / "a.csv"), "--project", str(project), "--model", str(out),
        "--threads", "1",
    )  # fmt: skip
    assert labelled.returncode == 0, labelled.stderr
    results = work / "r.jsonl"
    assert run_cli("results", str(project), "--out", str(results)).returncode == 0
    rows = [json.loads(line) for line in results.open()]
    assert len(rows) == 17
    assert all(
        set(r["topics"]) <= {"food", "travel", "work"} and len(r["topics"]) <= 2 for r in rows
    )
    assert all(r["tone"] in ("calm", "angry") for r in rows)
