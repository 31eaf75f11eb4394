"""Train tests, part 1: the base model (GGUF -> Hugging Face) and torch-side scoring. The
material the train tests share lives in tests/helpers/train.py."""

from __future__ import annotations  # noqa: I001  (`import train` must precede torch)

import json

import annotator.train  # noqa: F401  (first, before torch: OpenMP wait policy and hub settings)

import pytest
import torch

from annotator.data import read_items
from conftest import SAMPLES
from helpers.train import WORK, gemma_dir, gemma_tokenizer, tiny_dir


def test_gguf_base_becomes_a_plain_checkpoint_with_its_tokenizer(default_model):
    out = gemma_dir()
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # no pointer back to the GGUF quantizer
    assert config["model_type"] == "gemma3_text"
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    record = json.loads((WORK / "gemma-record.json").read_text())
    from annotator.modelfile import sha256_file

    assert record["kind"] == "gguf" and record["sha256"] == sha256_file(default_model)
    tokenizer = gemma_tokenizer()
    assert tokenizer.bos_token_id == 2 and tokenizer.pad_token_id == 0


def test_hf_directory_base_is_used_in_place_and_hashed(tmp_path):
    from annotator.train.base import prepare_base

    out, record = prepare_base(tiny_dir(), tmp_path)
    assert out == tiny_dir() and not (tmp_path / "base").exists()
    assert record["kind"] == "hf" and set(record["weights_sha256"]) == {"model.safetensors"}


def test_bad_bases_are_refused_with_one_line(tmp_path):
    from annotator.errors import AnnotatorError
    from annotator.train.base import check_base

    (tmp_path / "empty").mkdir()
    (tmp_path / "x.gguf").write_bytes(b"not a gguf")
    for path, words in (
        (tmp_path / "missing", "not found"),
        (tmp_path / "empty", "config.json"),
        (tmp_path / "x.gguf", "not a GGUF"),
    ):
        with pytest.raises(AnnotatorError, match=words):
            check_base(path)


def test_without_cuda_training_falls_back_to_fp32_lora_and_says_so(monkeypatch):
    from annotator.errors import AnnotatorError
    from annotator.train.args import HardwareArgs
    from annotator.train.base import resolve_hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    hw = resolve_hardware(HardwareArgs())
    assert (hw.device, hw.quantize, hw.dtype, hw.optimizer) == (
        "cpu",
        "none",
        torch.float32,
        "adamw",
    )
    assert any("plain LoRA in fp32" in note for note in hw.notes)
    with pytest.raises(AnnotatorError, match="no CUDA device"):
        resolve_hardware(HardwareArgs(device="cuda"))


def test_with_cuda_the_defaults_are_the_qlora_recipe(monkeypatch):
    from annotator.train.args import HardwareArgs
    from annotator.train.base import resolve_hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    hw = resolve_hardware(HardwareArgs())
    assert (hw.device, hw.quantize, hw.dtype, hw.optimizer, hw.gradient_checkpointing) == (
        "cuda",
        "nf4",
        torch.bfloat16,
        "adamw8bit",
        True,
    )
    assert not hw.notes


def test_torch_scoring_gives_the_engines_answers_on_the_real_model(
    default_model, goemotions_rubric
):
    """train.scoring (HF weights dequantized from the GGUF) decides like annotator.inference.engine
    (llama.cpp on the GGUF): same values; probabilities close (llama.cpp quantizes
    activations for its Q4_K matmuls, so they are not bit-identical)."""
    from transformers import AutoModelForCausalLM

    from annotator.inference.backend import EngineSettings
    from annotator.inference.engine import Engine
    from annotator.train.scoring import score_items

    _, items, _ = read_items(SAMPLES / "goemotions" / "items.csv", ["text"])
    items = items[:12]
    model = AutoModelForCausalLM.from_pretrained(gemma_dir(), dtype=torch.float32)
    ours = score_items(
        model, gemma_tokenizer(), goemotions_rubric, [i.fields for i in items], max_tokens=1024
    )
    engine = Engine(default_model, goemotions_rubric, EngineSettings(n_ctx=1024))
    try:
        theirs = [engine.annotate(i.fields).decisions["emotion"] for i in items]
    finally:
        engine.close()
    for mine, ref in zip(ours, theirs, strict=True):
        value, prob, _ = mine["emotion"]
        if ref.margin > 0.1:  # a near-tie may flip between backends; the engine flags those
            assert value == ref.value
        if value == ref.value:
            assert abs(prob - ref.prob) < 0.1
    assert (
        sum(m["emotion"][0] == r.value for m, r in zip(ours, theirs, strict=True)) >= len(items) - 1
    )
    # Prefix reuse (one KV cache for the rubric) changes nothing but speed.
    whole = score_items(
        model,
        gemma_tokenizer(),
        goemotions_rubric,
        [i.fields for i in items[:4]],
        max_tokens=1024,
        reuse_prefix=False,
    )
    for a, b in zip(ours[:4], whole, strict=True):
        assert a["emotion"][0] == b["emotion"][0]
        assert abs(a["emotion"][1] - b["emotion"][1]) < 1e-4


@pytest.mark.long  # 4 dimensions of 3 long articles, in torch and in llama.cpp
def test_torch_reads_the_hidden_states_the_engine_reads(default_model, newsroom_rubric):
    """A head fitted during training must see what the engine's layer tap gives it: the
    middle block's output at each dimension's cue (here four dimensions, so the positions
    after the model's own earlier answers count too). Same direction, same size."""
    import numpy as np
    from transformers import AutoModelForCausalLM

    from annotator.inference.backend import EngineSettings
    from annotator.inference.engine import Engine
    from annotator.train.scoring import middle_block, score_and_read

    _, items, _ = read_items(SAMPLES / "newsroom" / "items.csv", ["summary", "article"])
    items = items[:3]
    model = AutoModelForCausalLM.from_pretrained(gemma_dir(), dtype=torch.float32)
    assert middle_block(model) == 8  # block 8 of 18, as the engine reads by default
    scored = score_and_read(
        model, gemma_tokenizer(), newsroom_rubric, [i.fields for i in items], max_tokens=512
    )
    engine = Engine(default_model, newsroom_rubric, EngineSettings(n_ctx=512))
    try:
        theirs = [engine.annotate(i.fields) for i in items]
    finally:
        engine.close()
    assert scored.states is not None
    assert scored.states.shape == (3, len(newsroom_rubric.dimensions), 640)
    compared = 0
    for ours, decided, ref in zip(scored.states, scored.decisions, theirs, strict=True):
        for d, dim in enumerate(newsroom_rubric.dimensions):
            a, b = ours[d], np.asarray(ref.hidden[d], dtype=np.float32)
            assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.999, (d, dim.name)
            assert abs(np.linalg.norm(a) / np.linalg.norm(b) - 1) < 0.02
            compared += 1
            # The prompt continues with the most probable value: later states are comparable
            # only while both sides answered alike (a near tie may flip between backends).
            probs = ref.decisions[dim.name].probs
            if decided[dim.name][0] != dim.values[probs.index(max(probs))]:
                break
    assert compared >= len(items) + 3
