"""Train tests, part 1: the base model (GGUF -> Hugging Face), and the material the other
train tests share, built once per pytest process (the other train test files import it).

The shared material: the packaged Gemma 3 270M GGUF dequantized by the product's own code
(train.base.prepare_base), its tokenizer (read from the GGUF by transformers), and a tiny
two-layer Gemma 3 built here with that real tokenizer. Nothing is downloaded.
"""

from __future__ import annotations  # noqa: I001  (`import train` must precede torch)

import atexit
import csv
import functools
import json
import random
import shutil
import tempfile
from pathlib import Path

import annotator.train  # noqa: F401  (first, before torch: OpenMP wait policy and hub settings)

import pytest
import torch

from annotator.data import read_items
from annotator.rubric import rubric_from_dict
from conftest import SAMPLES

_WORK = Path(tempfile.mkdtemp(prefix="annotator-train-tests-"))
atexit.register(shutil.rmtree, _WORK, True)

# A rubric with two inputs (so input order varies) and two dimensions: a nominal one (its
# value list is shuffled in training) and an ordinal one.
SMOKE_RUBRIC = {
    "name": "smoke",
    "instructions": "Read the review and its title. Label it.",
    "inputs": [{"column": "title", "label": "TITLE"}, {"column": "text", "label": "REVIEW"}],
    "dimensions": [
        {"name": "sentiment", "question": "What is the sentiment?", "scale": "nominal",
         "values": ["positive", "negative", "mixed"]},
        {"name": "quality", "question": "How well written is it?", "scale": "ordinal",
         "values": [1, 2, 3], "anchors": {"1": "poor", "3": "good"}},
    ],
}
SMOKE_TOML = '''name = "smoke"
instructions = "Read the review and its title. Label it."

[[inputs]]
column = "title"
label = "TITLE"

[[inputs]]
column = "text"
label = "REVIEW"

[[dimensions]]
name = "sentiment"
question = "What is the sentiment?"
scale = "nominal"
values = ["positive", "negative", "mixed"]

[[dimensions]]
name = "quality"
question = "How well written is it?"
scale = "ordinal"
values = [1, 2, 3]
anchors = { 1 = "poor", 3 = "good" }
'''
WORDS = ("zebrafish", "quasar", "marmalade", "fjord", "kiln", "oboe", "tundra", "walrus",
         "saffron", "gazebo", "nectar", "pylon")


def smoke_rubric():
    return rubric_from_dict(SMOKE_RUBRIC, "smoke")


def smoke_rows(n: int, seed: int = 1, prefix: str = "r") -> list[dict]:
    """Labelled rows of made-up words (distinctive, so a log can be searched for them)."""
    rng = random.Random(seed)
    return [{"id": f"{prefix}{i}", "title": " ".join(rng.choices(WORDS, k=2)),
             "text": " ".join(rng.choices(WORDS, k=9)),
             "sentiment": rng.choice(["positive", "negative", "mixed"]),
             "quality": rng.choice([1, 2, 3])} for i in range(n)]


def write_labeled(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@functools.cache
def gemma_dir() -> Path:
    """The packaged Gemma 3 270M GGUF as a Hugging Face checkpoint, via prepare_base."""
    from annotator.modelfile import default_model_path
    from annotator.train.base import prepare_base

    run = _WORK / "gemma-run"
    run.mkdir()
    out, record = prepare_base(default_model_path(), run)
    (_WORK / "gemma-record.json").write_text(json.dumps(record))
    return out


@functools.cache
def gemma_tokenizer():
    from annotator.train.base import load_tokenizer

    return load_tokenizer(gemma_dir())


@functools.cache
def tiny_dir(llama_cpp_shape: bool = True) -> Path:
    """A two-layer Gemma 3 (hidden size 64) with the real 262k-token Gemma tokenizer.

    `llama_cpp_shape`: shaped so llama.cpp computes what torch computes (export's drift check
    runs on it): llama.cpp scales attention by head_dim and reads a 2-layer Gemma 3 as all
    sliding-window; a window longer than any test sequence makes that exact. Torch-only tests
    that need varied answers from random weights use the other shape (a short window and a
    full-attention layer), where answers depend more on the item.
    """
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = gemma_tokenizer()
    if llama_cpp_shape:
        shape = {"query_pre_attn_scalar": 32, "sliding_window": 512,
                 "layer_types": ["sliding_attention", "sliding_attention"]}
    else:
        shape = {"sliding_window": 64, "layer_types": ["sliding_attention", "full_attention"]}
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, **shape,
        max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    out = _WORK / ("tiny" if llama_cpp_shape else "tiny-torch")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# -- tests ---------------------------------------------------------------------------------------


def test_gguf_base_becomes_a_plain_checkpoint_with_its_tokenizer(default_model):
    out = gemma_dir()
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # no pointer back to the GGUF quantizer
    assert config["model_type"] == "gemma3_text"
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    record = json.loads((_WORK / "gemma-record.json").read_text())
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
    for path, words in ((tmp_path / "missing", "not found"), (tmp_path / "empty", "config.json"),
                        (tmp_path / "x.gguf", "not a GGUF")):
        with pytest.raises(AnnotatorError, match=words):
            check_base(path)


def test_without_cuda_training_falls_back_to_fp32_lora_and_says_so(monkeypatch):
    from annotator.errors import AnnotatorError
    from annotator.train.args import HardwareArgs
    from annotator.train.base import resolve_hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    hw = resolve_hardware(HardwareArgs())
    assert (hw.device, hw.quantize, hw.dtype, hw.optimizer) == ("cpu", "none", torch.float32, "adamw")
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
        "cuda", "nf4", torch.bfloat16, "adamw8bit", True)
    assert not hw.notes


def test_torch_scoring_gives_the_engines_answers_on_the_real_model(default_model, goemotions_rubric):
    """train.scoring (HF weights dequantized from the GGUF) decides like annotator.inference.engine
    (llama.cpp on the GGUF): same values; probabilities close (llama.cpp quantizes
    activations for its Q4_K matmuls, so they are not bit-identical)."""
    from transformers import AutoModelForCausalLM

    from annotator.inference.engine import Engine, EngineSettings
    from annotator.train.scoring import score_items

    _, items, _ = read_items(SAMPLES / "goemotions" / "items.csv", ["text"])
    items = items[:12]
    model = AutoModelForCausalLM.from_pretrained(gemma_dir(), dtype=torch.float32)
    ours = score_items(model, gemma_tokenizer(), goemotions_rubric, [i.fields for i in items],
                       max_tokens=1024)
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
    assert sum(m["emotion"][0] == r.value for m, r in zip(ours, theirs, strict=True)) >= len(items) - 1
    # Prefix reuse (one KV cache for the rubric) changes nothing but speed.
    whole = score_items(model, gemma_tokenizer(), goemotions_rubric, [i.fields for i in items[:4]],
                        max_tokens=1024, reuse_prefix=False)
    for a, b in zip(ours[:4], whole, strict=True):
        assert a["emotion"][0] == b["emotion"][0]
        assert abs(a["emotion"][1] - b["emotion"][1]) < 1e-4
