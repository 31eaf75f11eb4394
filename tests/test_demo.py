"""The bundled demo model: a LoRA adapter fine-tuned by this project's own pipeline
(bench/quality.py goemotions), run by real llama.cpp on the embedded Gemma 3 270M."""

from __future__ import annotations

import json

from conftest import run_cli

from annotator.modelfile import default_model_path, read_model_info, sha256_file
from annotator.rubric import load_rubric
from annotator.tui.launch import DEMO_MODEL, samples_dir

SAMPLE = samples_dir() / "goemotions"


def test_the_demo_adapter_is_small_and_made_for_the_embedded_model():
    info = read_model_info(SAMPLE / DEMO_MODEL)
    assert info.is_adapter
    assert info.size < 20_000_000  # nothing over 20 MB is committed
    assert info.base_sha256 == sha256_file(default_model_path())
    assert info.rubric is not None
    assert info.rubric.hash == load_rubric(SAMPLE / "rubric.toml").hash
    assert "GoEmotions" in info.description and "Apache-2.0" in info.description
    assert info.provenance["validation_alpha"]["emotion"] > 0.2


def test_the_demo_adapter_carries_the_nominal_head_it_was_measured_with():
    """The demo ships the adapter with the GoEmotions head bench/nominal_quality.py fitted
    (5,760 further train comments; README, "Nominal heads"): chosen by cross-validation among
    settings that keep the adapter's own accuracy, and `inspect` shows it."""
    info = read_model_info(SAMPLE / DEMO_MODEL)
    assert info.rubric is not None
    head = info.head(info.rubric)
    assert head is not None and set(head.dims) == {"emotion"}
    emotion = head.dims["emotion"]
    assert emotion.inputs == "probs" and emotion.n == 5760 and len(emotion.classes) == 28
    assert emotion.cv_accuracy >= emotion.model_accuracy and emotion.cv_macro_f1 > 0.3
    assert emotion.cv_alpha > 0.3
    assert "calibration head" in info.description and "--no-head" in info.description
    shown = run_cli("inspect", str(SAMPLE / DEMO_MODEL))
    assert shown.returncode == 0, shown.stderr
    assert "calibration   head on emotion (5760 reviewed items" in shown.stdout


def test_the_demo_adapter_labels_the_sample_unlike_the_base_model(tmp_path):
    """The adapter changes what the model says: on the sample, its labels (the head's) differ
    from the untrained base's on many items, and it does not give every comment one label."""
    labels = {}
    for name, model in (("tuned", ["--model", str(SAMPLE / DEMO_MODEL)]), ("base", [])):
        project = tmp_path / f"{name}.db"
        done = run_cli(
            "annotate",
            str(SAMPLE / "items.csv"),
            "--rubric",
            str(SAMPLE / "rubric.toml"),
            "--project",
            str(project),
            *model,
            "--threads",
            "1",
        )
        assert done.returncode == 0, done.stderr
        out = tmp_path / f"{name}.jsonl"
        assert run_cli("results", str(project), "--out", str(out)).returncode == 0
        labels[name] = {
            r["id"]: r["emotion"] for r in map(json.loads, out.read_text().splitlines())
        }
    assert len(labels["tuned"]) == 40 and labels["tuned"].keys() == labels["base"].keys()
    differ = sum(labels["tuned"][k] != labels["base"][k] for k in labels["tuned"])
    assert differ >= 10, differ
    assert len(set(labels["tuned"].values())) >= 4


def test_the_demo_adapter_reveals_no_paths_or_item_ids():
    """What travels to the field: hashes, counts, file names and settings, no training-machine
    path and none of the validation item ids (GoEmotions ids look like 'edvnz26')."""
    raw = (SAMPLE / DEMO_MODEL).read_bytes()
    info = read_model_info(SAMPLE / DEMO_MODEL)
    split = info.provenance["split"]
    assert "validation_ids" not in split and len(split["validation_ids_sha256"]) == 64
    assert split["validation_count"] == 64 and split["train_count"] == 256
    assert b"/work/" not in raw and b"/home/" not in raw and b"/root/" not in raw
    for item_id in (b"edvnz26", b"ef83m1s", b"eew89xn", b"ed4dcht"):  # validation ids it held
        assert item_id not in raw
    assert info.provenance["settings"]["data"]["rubric"] == "rubric.toml"
