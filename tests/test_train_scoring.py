"""Train tests, part 5: train.scoring against an independent, brute-force reference.

The reference runs one whole forward pass per allowed value and applies the engine's rule
(softmax among the tokens that can follow, at every point where the values' token sequences
branch) without tries, caches or batches. Values 1, 2, 10, 11, 12 tokenize as " "+digits in
Gemma, so the trie has a forced lead token and branches at two depths."""

from __future__ import annotations  # noqa: I001  (`import train` must precede torch)

import math

import annotator.train  # noqa: F401  (first, before torch: OpenMP wait policy and hub settings)

import torch
from helpers.train import gemma_tokenizer, smoke_rows, tiny_dir

from annotator.inference import prompt
from annotator.rubric import rubric_from_dict
from annotator.train.data import bos_ids, tokenize_piece
from annotator.train.scoring import score_items

RUBRIC = rubric_from_dict(
    {
        "name": "deep",
        "instructions": "Rate the review.",
        "inputs": [{"column": "title", "label": "TITLE"}, {"column": "text", "label": "REVIEW"}],
        "dimensions": [
            {
                "name": "stars",
                "question": "How many stars?",
                "scale": "ordinal",
                "values": [1, 2, 10, 11, 12],
            },
            {
                "name": "mood",
                "question": "Which mood?",
                "scale": "nominal",
                "values": ["nervous", "nervousness", "joy", "joyful", "sad"],
            },
        ],
    },
    "deep",
)


def reference(model, tokenizer, fields) -> dict:
    tok = lambda text: tokenize_piece(tokenizer, text)  # noqa: E731
    context = (
        bos_ids(tokenizer)
        + tok(prompt.render_prefix(RUBRIC))
        + tok(prompt.render_item(RUBRIC, fields))
    )
    out = {}
    for dim in RUBRIC.dimensions:
        context = context + tok(prompt.render_cue(dim))
        seqs = [[t for p in prompt.render_answer(v) for t in tok(p)] for v in dim.values]
        probs = []
        for seq in seqs:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([context + seq])).logits[0]
            p = 1.0
            for k in range(len(seq)):
                following = sorted({s[k] for s in seqs if len(s) > k and s[:k] == seq[:k]})
                if len(following) > 1:
                    row = [float(logits[len(context) + k - 1, t]) for t in following]
                    top = max(row)
                    weights = [math.exp(x - top) for x in row]
                    p *= weights[following.index(seq[k])] / sum(weights)
            probs.append(p)
        order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
        best = order[0]
        out[dim.name] = (dim.values[best], probs[best], probs[best] - probs[order[1]])
        context = context + seqs[best]
    return out


def test_scoring_matches_the_brute_force_reference():
    from transformers import AutoModelForCausalLM

    tokenizer = gemma_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(
        tiny_dir(llama_cpp_shape=False), dtype=torch.float32
    ).eval()
    torch.manual_seed(1)
    with torch.no_grad():  # sharpen the random model so its choices are not near-ties
        for p in model.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    items = [{"title": r["title"], "text": r["text"]} for r in smoke_rows(6, seed=4)]
    items[2]["text"] = items[2]["text"] * 5  # lengths differ within a batch (padding)
    expected = [reference(model, tokenizer, f) for f in items]
    for reuse in (True, False):
        for batch in (1, 4):
            got = score_items(model, tokenizer, RUBRIC, items, batch_size=batch, reuse_prefix=reuse)
            for mine, ref in zip(got, expected, strict=True):
                for name in ("stars", "mood"):
                    assert mine[name][0] == ref[name][0]
                    assert abs(mine[name][1] - ref[name][1]) < 1e-4
                    assert abs(mine[name][2] - ref[name][2]) < 1e-4
    chosen = {r["stars"][0] for r in expected} | {r["mood"][0] for r in expected}
    assert len(chosen) > 2  # the sharpened model does not answer the same everywhere
    assert score_items(model, tokenizer, RUBRIC, []) == []


def test_trie_has_a_lead_and_deep_branches():
    from annotator.train.scoring import _plan

    plan = _plan(gemma_tokenizer(), RUBRIC.dimensions[0])
    assert len(plan.lead) == 1  # the space every " <digits>" starts with
    assert max(len(path) for path, _ in plan.decisions) >= 1  # a branch below the first digit
