"""Train tests, part 3: the real `annotator train` entry point on a tiny model, end to end.

A two-layer Gemma 3 with the real Gemma tokenizer trains for a few steps on CPU, validates,
keeps its best adapter and merges it; the tests check the files written, the provenance, the
run directory rule, that nothing reached the network or the log as item text, and that the
merged model reproduces the adapter model's logits.
"""

from __future__ import annotations  # noqa: I001  (`import train` must precede torch)

import hashlib
import json

import annotator.train  # noqa: F401  (first, before torch: OpenMP wait policy and hub settings)

import pytest
import torch
from helpers.train import SMOKE_TOML, WORDS, smoke_rows, tiny_dir, write_labeled

from annotator.inference import prompt
from annotator.rubric import load_rubric
from conftest import offline_site, run_cli
from annotator.train.data import Encoder, LabeledItem

# A learning rate far above the recipe's, so three steps move the adapter enough that
# "merged equals adapter" is not trivially true of an adapter that is still zero.
FAST = [
    "--batch-size",
    "4",
    "--micro-batch-size",
    "2",
    "--max-steps",
    "3",
    "--eval-every",
    "2",
    "--lr",
    "0.02",
    "--warmup",
    "0",
    "--lora-r",
    "4",
    "--lora-alpha",
    "8",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("train-cli")
    (path / "rubric.toml").write_text(SMOKE_TOML)
    write_labeled(path / "a.csv", smoke_rows(16, seed=1, prefix="a"))
    write_labeled(path / "b.csv", smoke_rows(8, seed=2, prefix="b"))
    offline_site(path / "offline_site")
    return path


@pytest.fixture(scope="module")
def run(workdir):
    """One real run through `python -m annotator train`, network switched off."""
    done = run_cli(
        "train",
        "--base",
        str(tiny_dir()),
        "--data",
        str(workdir / "a.csv"),
        "--data",
        str(workdir / "b.csv"),
        "--rubric",
        str(workdir / "rubric.toml"),
        "--out",
        str(workdir / "run"),
        *FAST,
        env={"PYTHONPATH": str(workdir / "offline_site"), "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir / "run", done


def test_run_writes_the_run_directory(run):
    run_dir, done = run
    for name in (
        "train.log",
        "split.json",
        "validation.jsonl",
        "metrics.jsonl",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "merged/config.json",
        "merged/model.safetensors",
        "merged/tokenizer.json",
        "merged/annotator_provenance.json",
    ):
        assert (run_dir / name).is_file(), name
    assert "plain LoRA in fp32" in done.stderr  # the CPU fallback is announced
    assert "validation alpha before" in done.stdout and "merged model" in done.stdout
    # A Hugging Face base has no GGUF for an adapter: no calibrated files, one line saying so.
    assert "no calibrated files: the run's base is a Hugging Face model" in done.stdout
    assert not (run_dir / "calibrated.gguf").exists()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 2, 3]  # before, every 2 steps, last step


def test_provenance_records_what_made_the_model(run, workdir):
    run_dir, _ = run
    prov = json.loads((run_dir / "merged" / "annotator_provenance.json").read_text())
    rubric = load_rubric(workdir / "rubric.toml")
    assert prov["rubric"] == rubric.canonical_json()
    assert prov["prompt_format"] == prompt.PROMPT_FORMAT
    assert prov["data_sha256"] == [
        hashlib.sha256((workdir / n).read_bytes()).hexdigest() for n in ("a.csv", "b.csv")
    ]
    assert prov["base"] == str(tiny_dir().resolve()) and prov["base_detail"]["kind"] == "hf"
    assert set(prov["validation_alpha"]) == {"sentiment", "quality"}
    split = prov["split"]
    assert split["seed"] == 3407 and split["train_count"] + split["validation_count"] == 24
    assert prov["settings"]["train"]["lr"] == 0.02
    # one rating per item: today's training, recorded as such
    assert prov["targets"] == {
        "target": "majority",
        "ordinal_interval_loss": "ce",
        "class_weights": "none",
        "class_weight_values": None,
    }
    assert prov["settings"]["loss"] == {"target": "auto", "loss": "ce", "class_weights": "none"}
    assert prov["settings"]["hardware"]["resolved"]["quantize"] == "none"
    check = prov["merge_check"]
    assert check["all_same"] and check["items"] == split["validation_count"]
    assert check["max_abs_logit_diff"] < 1e-3
    for key in ("date", "tool_version", "validation_alpha_before"):
        assert key in prov


def test_validation_file_holds_exactly_the_held_out_items(run):
    run_dir, _ = run
    split = json.loads((run_dir / "split.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "validation.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == split["validation_ids"]
    assert all(set(r) == {"id", "title", "text", "sentiment", "quality"} for r in rows)
    source = {r["id"]: r for r in smoke_rows(16, 1, "a") + smoke_rows(8, 2, "b")}
    for r in rows:
        assert r["text"] == source[r["id"]]["text"] and r["quality"] == source[r["id"]]["quality"]


def test_no_item_text_in_the_log(run):
    run_dir, done = run
    log = (run_dir / "train.log").read_text() + done.stderr + done.stdout
    assert not any(word in log for word in WORDS)


def test_merged_model_reproduces_the_adapter_models_logits(run, workdir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir, _ = run
    rubric = load_rubric(workdir / "rubric.toml")
    base = AutoModelForCausalLM.from_pretrained(tiny_dir(), dtype=torch.float32)
    plain = AutoModelForCausalLM.from_pretrained(tiny_dir(), dtype=torch.float32)
    adapter = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "merged", dtype=torch.float32).eval()
    from annotator.train.base import load_tokenizer

    encoder = Encoder(load_tokenizer(run_dir / "merged"), rubric, 512)
    rows = [json.loads(line) for line in (run_dir / "validation.jsonl").read_text().splitlines()]
    with torch.no_grad():
        for row in rows:
            item = LabeledItem(
                row["id"],
                "v",
                1,
                {"title": row["title"], "text": row["text"]},
                {"sentiment": row["sentiment"], "quality": row["quality"]},
            )
            ids = torch.tensor([encoder.example(item).ids])
            a, m = adapter(input_ids=ids).logits, merged(input_ids=ids).logits
            assert torch.allclose(a, m, atol=1e-4, rtol=1e-4), (a - m).abs().max()
            # ...and the adapter really changed the model, so the comparison means something
            assert (a - plain(input_ids=ids).logits).abs().max() > 1e-2


def test_a_second_run_never_overwrites_the_first(run, workdir):
    from annotator.train.cli import main

    run_dir, _ = run
    before = (run_dir / "merged" / "annotator_provenance.json").read_bytes()
    main(
        [
            "--base",
            str(tiny_dir()),
            "--data",
            str(workdir / "a.csv"),
            "--rubric",
            str(workdir / "rubric.toml"),
            "--out",
            str(run_dir),
            "--no-eval-before",
            *FAST,
            "--max-steps",
            "1",
        ]
    )
    assert (run_dir.parent / "run-2" / "merged" / "annotator_provenance.json").is_file()
    assert (run_dir / "merged" / "annotator_provenance.json").read_bytes() == before
    assert "run-2" in (run_dir.parent / "run-2" / "train.log").read_text()


def test_a_mistake_in_the_inputs_leaves_no_run_directory(workdir):
    from annotator.errors import AnnotatorError
    from annotator.train.cli import main

    rows = [{k: v for k, v in r.items() if k != "quality"} for r in smoke_rows(4)]
    unlabelled = write_labeled(workdir / "unlabelled.csv", rows)
    with pytest.raises(AnnotatorError, match="missing column"):
        main(
            [
                "--base",
                str(tiny_dir()),
                "--data",
                str(unlabelled),
                "--rubric",
                str(workdir / "rubric.toml"),
                "--out",
                str(workdir / "never"),
            ]
        )
    assert not (workdir / "never").exists()


def test_the_qlora_path_runs_and_merges_into_the_dequantized_base(workdir):
    """The 4-bit code path (NF4 base, 8-bit AdamW, merge into the dequantized NF4 weights) on
    bitsandbytes' CPU kernels. The merged model matches the adapter model to the precision of
    the 4-bit kernels (they do not compute exactly as fp32 matmuls on dequantized weights)."""
    from annotator.train.cli import main

    main(
        [
            "--base",
            str(tiny_dir()),
            "--data",
            str(workdir / "a.csv"),
            "--rubric",
            str(workdir / "rubric.toml"),
            "--out",
            str(workdir / "qlora"),
            "--quantize",
            "nf4",
            "--optimizer",
            "adamw8bit",
            "--no-eval-before",
            *FAST,
        ]
    )
    prov = json.loads((workdir / "qlora" / "merged" / "annotator_provenance.json").read_text())
    resolved = prov["settings"]["hardware"]["resolved"]
    assert resolved["quantize"] == "nf4" and resolved["optimizer"] == "adamw8bit"
    check = prov["merge_check"]
    assert "dequantized" in check["merged_into"]
    assert check["max_abs_logit_diff"] < 0.1 * max(check["max_abs_logit"], 1.0)
    config = json.loads((workdir / "qlora" / "merged" / "config.json").read_text())
    assert "quantization_config" not in config


@pytest.mark.long
def test_the_trained_run_goes_through_export(run, workdir):
    """Train's real output, exported: the GGUF carries the rubric and annotates without one."""
    run_dir, _ = run
    out = workdir / "tiny.gguf"
    done = run_cli(
        "export",
        str(run_dir / "merged"),
        "--out",
        str(out),
        "--quant",
        "q8_0",
        "--threads",
        "1",
        "--min-agreement",
        "0",
        "--bootstrap",
        "50",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.is_file() and "sha256" in done.stdout + done.stderr
    shown = run_cli("inspect", str(out))
    assert shown.returncode == 0, shown.stderr
    rubric = load_rubric(workdir / "rubric.toml")
    assert f"rubric        {rubric.name!r} {rubric.hash[:12]}" in shown.stdout
    labelled = run_cli(
        "annotate",
        str(run_dir / "validation.jsonl"),
        "--project",
        str(workdir / "exported.db"),
        "--model",
        str(out),
        "--threads",
        "1",
    )
    assert labelled.returncode == 0, labelled.stderr
    assert "skipped 0 rows" in labelled.stderr


def test_train_from_a_project_with_three_reviewers(workdir):
    """`train --from-project`: items and imported reviews of three reviewers, one example per
    item trained on their distribution; the choice is in the log and the provenance."""
    from annotator.data import Item
    from annotator.project.reviews import import_reviews
    from annotator.project.store import Store

    project = workdir / "p.db"
    rows = smoke_rows(10, seed=5, prefix="p")
    with Store(project) as store:
        store.bind_rubric(load_rubric(workdir / "rubric.toml"))
        store.add_items(
            [Item(r["id"], n, {"title": r["title"], "text": r["text"]}) for n, r in enumerate(rows)]
        )
        for k, name in enumerate(("ana", "ben", "cho")):
            reviews = [
                {
                    "id": r["id"],
                    "sentiment": ["positive", "negative", "mixed"][(n + k) % 3],
                    "quality": "" if (n, k) == (0, 2) else 1 + (n * k) % 3,  # one left blank
                }
                for n, r in enumerate(rows)
            ]
            report = import_reviews(store, write_labeled(workdir / f"{name}.csv", reviews), name)
            assert not report.problems
    done = run_cli(
        "train",
        "--base",
        str(tiny_dir()),
        "--from-project",
        str(project),
        "--rubric",
        str(workdir / "rubric.toml"),
        "--out",
        str(workdir / "from-project"),
        "--loss",
        "both",
        "--class-weights",
        "balanced",
        "--no-eval-before",
        *FAST[:4],
        "--max-steps",
        "1",
        env={"PYTHONPATH": str(workdir / "offline_site"), "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = workdir / "from-project"
    prov = json.loads((run_dir / "merged" / "annotator_provenance.json").read_text())
    assert prov["targets"]["target"] == "soft"
    assert prov["targets"]["ordinal_interval_loss"] == "both"
    assert prov["targets"]["class_weights"] == "balanced"
    assert {v for v, _ in prov["targets"]["class_weight_values"]["sentiment"]} == {
        "positive",
        "negative",
        "mixed",
    }
    assert prov["data_sha256"] == [hashlib.sha256(project.read_bytes()).hexdigest()]
    assert prov["split"]["train_count"] + prov["split"]["validation_count"] == 10
    log = (run_dir / "train.log").read_text()
    assert "targets: the raters' distribution (most ratings of an item: 3)" in log
    assert not any(word in log for r in rows for word in r["text"].split())


def test_data_or_a_project_one_of_the_two(tmp_path):
    import click

    from annotator.train.cli import main

    rubric = tmp_path / "rubric.toml"
    rubric.write_text(SMOKE_TOML)
    common = ["--rubric", str(rubric), "--out", str(tmp_path / "never"), "--base", "x"]
    for given in ([], ["--data", "a.csv", "--from-project", "p.db"]):
        with pytest.raises(click.UsageError, match="--data files or --from-project"):
            main([*given, *common])
    assert not (tmp_path / "never").exists()
