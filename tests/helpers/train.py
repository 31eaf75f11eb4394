"""Material the train tests share, built once per pytest process: the packaged Gemma 3 270M GGUF
dequantized by the product's own code (train.base.prepare_base), its tokenizer (read from the
GGUF by transformers), and a tiny two-layer Gemma 3 built here with that real tokenizer.
Nothing is downloaded.
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

import torch

from annotator.rubric import rubric_from_dict

WORK = Path(tempfile.mkdtemp(prefix="annotator-train-tests-"))
atexit.register(shutil.rmtree, WORK, True)

# A rubric with two inputs (so input order varies) and two dimensions: a nominal one (its
# value list is shuffled in training) and an ordinal one.
SMOKE_RUBRIC = {
    "name": "smoke",
    "instructions": "Read the review and its title. Label it.",
    "inputs": [{"column": "title", "label": "TITLE"}, {"column": "text", "label": "REVIEW"}],
    "dimensions": [
        {
            "name": "sentiment",
            "question": "What is the sentiment?",
            "scale": "nominal",
            "values": ["positive", "negative", "mixed"],
        },
        {
            "name": "quality",
            "question": "How well written is it?",
            "scale": "ordinal",
            "values": [1, 2, 3],
            "anchors": {"1": "poor", "3": "good"},
        },
    ],
}
SMOKE_TOML = """name = "smoke"
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
"""
WORDS = (
    "zebrafish",
    "quasar",
    "marmalade",
    "fjord",
    "kiln",
    "oboe",
    "tundra",
    "walrus",
    "saffron",
    "gazebo",
    "nectar",
    "pylon",
)


def smoke_rubric():
    return rubric_from_dict(SMOKE_RUBRIC, "smoke")


def smoke_rows(n: int, seed: int = 1, prefix: str = "r") -> list[dict]:
    """Labelled rows of made-up words (distinctive, so a log can be searched for them)."""
    rng = random.Random(seed)
    return [
        {
            "id": f"{prefix}{i}",
            "title": " ".join(rng.choices(WORDS, k=2)),
            "text": " ".join(rng.choices(WORDS, k=9)),
            "sentiment": rng.choice(["positive", "negative", "mixed"]),
            "quality": rng.choice([1, 2, 3]),
        }
        for i in range(n)
    ]


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

    run = WORK / "gemma-run"
    run.mkdir()
    out, record = prepare_base(default_model_path(), run)
    (WORK / "gemma-record.json").write_text(json.dumps(record))
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
        shape = {
            "query_pre_attn_scalar": 32,
            "sliding_window": 512,
            "layer_types": ["sliding_attention", "sliding_attention"],
        }
    else:
        shape = {"sliding_window": 64, "layer_types": ["sliding_attention", "full_attention"]}
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        **shape,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    out = WORK / ("tiny" if llama_cpp_shape else "tiny-torch")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
