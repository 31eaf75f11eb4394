"""Training prompts tokenize exactly as inference prompts: the HF tokenizer (read from the
packaged Gemma GGUF by transformers) against llama.cpp's tokenizer on the same GGUF, piece
by piece, with the pieces `annotator.inference.prompt.segments` gives (training variants included)."""

from __future__ import annotations  # noqa: I001  (`import train` must precede torch)

import random

import annotator.train  # noqa: F401  (first, before torch: OpenMP wait policy and hub settings)

import llama_cpp
import pytest
from helpers.train import gemma_tokenizer, smoke_rows, smoke_rubric

from annotator.inference import prompt
from annotator.data import read_items
from annotator.inference.backend import EngineSettings
from annotator.inference.engine import Engine
from conftest import SAMPLES
from annotator.train.args import AugmentArgs
from annotator.train.augment import draw_variant, instruction_texts
from annotator.train.data import Encoder, LabeledItem, bos_ids, encode_pieces, tokenize_piece

TRICKY = [
    "<start_of_turn>user\nhi<end_of_turn>",
    "<bos> and <pad> and <unk> as text",
    "  two leading",
    "trailing  ",
    "\n\n\n",
    "émoji 🎉 中文 ünïcödé",
    " 1",
    "1",
    "-2",
    " -2",
    "\t tab",
    "a\r\nb",
    "{curly} {{double}} %s",
    "### ANSWERS\n",
    "x" * 300,
]


@pytest.fixture(scope="module")
def llama(default_model):
    llm = llama_cpp.Llama(str(default_model), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def llama_tokens(llm, text: str, bos: bool = False) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=bos, special=False)


def sample_pieces():
    """(rubric, pieces) from both bundled samples, with answers, plain and as training variants."""
    from annotator.rubric import load_rubric

    rng = random.Random(5)
    for name, columns, n in (("goemotions", ["text"], 40), ("newsroom", ["summary", "article"], 4)):
        rubric = load_rubric(SAMPLES / name / "rubric.toml")
        _, items, _ = read_items(SAMPLES / name / "items.csv", columns)
        texts = instruction_texts(rubric, AugmentArgs(), ["A paraphrase: label {this} item."])
        for item in items[:n]:
            answers = {d.name: rng.choice(d.values) for d in rubric.dimensions}
            variant = draw_variant(rubric, AugmentArgs(), texts, rng)
            yield rubric, prompt.segments(rubric, item.fields, answers)
            yield (
                rubric,
                prompt.segments(
                    rubric,
                    item.fields,
                    answers,
                    order=variant.order,
                    instructions=variant.instructions,
                    shown_values=variant.shown_values,
                ),
            )


def test_every_piece_tokenizes_identically(llama):
    tokenizer = gemma_tokenizer()
    count = 0
    for _, pieces in sample_pieces():
        for _, text in pieces:
            assert tokenize_piece(tokenizer, text) == llama_tokens(llama, text), repr(text[:60])
            count += 1
    for text in TRICKY:
        assert tokenize_piece(tokenizer, text) == llama_tokens(llama, text), repr(text[:60])
    assert count > 300


def test_whole_sequences_with_bos_match(llama):
    tokenizer = gemma_tokenizer()
    assert bos_ids(tokenizer) == llama_tokens(llama, "", bos=True) == [2]
    for _, pieces in sample_pieces():
        ids, kinds = encode_pieces(tokenizer, pieces, bos_ids(tokenizer))
        expected = llama_tokens(llama, pieces[0][1], bos=True)
        for _, text in pieces[1:]:
            expected += llama_tokens(llama, text)
        assert ids == expected
        assert kinds[0] == "bos" and kinds.count("answer") >= 2


def test_validation_example_is_the_engines_sequence_up_to_the_answer(default_model, llama):
    """An un-augmented example (validation, scoring) starts with exactly the tokens the engine
    evaluates before its first decision: prefix (BOS first), item, cue."""
    rubric = smoke_rubric()
    encoder = Encoder(gemma_tokenizer(), rubric, max_tokens=1024)
    engine = Engine(default_model, rubric, EngineSettings(n_ctx=1024))
    try:
        for row in smoke_rows(5):
            item = LabeledItem(
                row["id"],
                "x",
                1,
                {"title": row["title"], "text": row["text"]},
                {"sentiment": row["sentiment"], "quality": row["quality"]},
            )
            example = encoder.example(item)
            item_tokens, _ = engine.fit_item(item.fields)
            engine_seq = engine.prefix_tokens + item_tokens + engine.cue_tokens[0]
            assert example.ids[: len(engine_seq)] == engine_seq
            assert example.kinds[len(engine_seq)] == "answer"
            # and the first answer's tokens are the engine's value tokens for that label
            dim = rubric.dimensions[0]
            value_tokens = engine.value_tokens[0][dim.values.index(row["sentiment"])]
            assert (
                example.ids[len(engine_seq) : len(engine_seq) + len(value_tokens)] == value_tokens
            )
    finally:
        engine.close()


def test_long_items_are_cut_like_the_engine_cuts_them(default_model):
    rubric = smoke_rubric()
    n_ctx = 256
    encoder = Encoder(gemma_tokenizer(), rubric, max_tokens=n_ctx)
    engine = Engine(default_model, rubric, EngineSettings(n_ctx=n_ctx))
    try:
        long_text = " ".join(f"word{i} and more" for i in range(200))
        item = LabeledItem(
            "long",
            "x",
            1,
            {"title": "short title", "text": long_text},
            {"sentiment": "mixed", "quality": 2},
        )
        example = encoder.example(item)
        tokens, cut = engine.fit_item(item.fields)
        assert cut > 0 and example.truncated == cut
        start = len(engine.prefix_tokens)
        assert example.ids[start : start + len(tokens)] == tokens
        assert len(example.ids) <= n_ctx
    finally:
        engine.close()
