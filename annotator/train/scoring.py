"""Constrained decoding in torch: the engine's answers, computed by a Hugging Face model.

Mirrors annotator/engine.py step for step, so validation during training measures what
inference will do and export can compare a merged model with its GGUF file:
  - the prompt is `prompt.segments`' pieces, each tokenized on its own (BOS first);
  - per dimension, the allowed values' token sequences (" value" then "\\n") form a trie;
    tokens every value starts with are forced, and at each branch the next-token logits are
    read only at the children's tokens and softmaxed among them; a value's probability is
    the product along its path (the engine's exact rule, not a full-vocabulary softmax);
  - the answer is the most probable value (ties: the value listed first), its margin is the
    gap to the runner-up, and the chosen value's tokens and the next cue follow.
Item text longer than the budget is cut with the engine's rule (train.data.fit_fields).

`score_and_read` also returns what a calibration head reads (annotator/calibration/heads.py):
per item and dimension, the residual stream after the middle block (block n_layer // 2 - 1,
the engine's default) at the cue's last token, the engine's decision point
(annotator/inference/engine.py), taken from the same forward pass that gives the logits.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from annotator.errors import AnnotatorError
from annotator.inference import prompt
from annotator.inference.trie import (
    Node,
    build_trie,
    lead_and_branch,
    only_leaf,
    restricted_softmax,
)
from annotator.rubric import Dimension, Rubric, Value
from annotator.train.data import answers_budget, bos_ids, fit_fields, tokenize_piece

Decision = tuple[Value, float, float]  # value, probability among allowed values, margin


@dataclass
class _Plan:
    """One dimension's token sequences and the trie nodes that need logits."""

    dim: Dimension
    cue: list[int]
    values: list[list[int]]
    lead: list[int]
    branch: Node
    decisions: list[tuple[tuple[int, ...], list[int]]]  # (path after lead, children's tokens)
    # of every node whose logits are read


@dataclass
class Scored:
    decisions: list[dict[str, Decision]]  # per item
    probs: list[dict[str, list[float]]]  # per item, each dimension's value probabilities
    states: np.ndarray | None  # (items, dimensions, hidden size) float32; None: not read


def score_items(
    model,
    tokenizer,
    rubric: Rubric,
    items: Sequence[Mapping[str, str]],
    *,
    batch_size: int = 8,
    max_tokens: int | None = None,
    reuse_prefix: bool = True,
) -> list[dict[str, Decision]]:
    """Each item's (value, prob, margin) per dimension, decided as the engine decides.

    `items` are input fields (column -> text). `max_tokens` cuts long items the engine's way
    for that context size (None: no cut). `reuse_prefix` computes the rubric prefix once and
    reuses its KV cache for every item, as the engine does (False: whole sequences each time).
    The model is put in eval mode for the call.
    """
    return score_and_read(
        model,
        tokenizer,
        rubric,
        items,
        batch_size=batch_size,
        max_tokens=max_tokens,
        reuse_prefix=reuse_prefix,
        read_states=False,
    ).decisions


def middle_block(model) -> int:
    """The block the engine reads by default: after half of the model's blocks."""
    config = model.config
    config = getattr(config, "text_config", None) or config
    return max(0, int(config.num_hidden_layers) // 2 - 1)


def score_and_read(
    model,
    tokenizer,
    rubric: Rubric,
    items: Sequence[Mapping[str, str]],
    *,
    batch_size: int = 8,
    max_tokens: int | None = None,
    reuse_prefix: bool = True,
    read_states: bool = True,
) -> Scored:
    """`score_items`, plus every value's probability and (with `read_states`) the middle
    block's hidden state at each dimension's decision point."""
    if not items:
        return Scored([], [], None)
    plans = [_plan(tokenizer, d) for d in rubric.dimensions]
    prefix = bos_ids(tokenizer) + tokenize_piece(tokenizer, prompt.render_prefix(rubric))
    budget = None
    if max_tokens is not None:
        budget = max_tokens - len(prefix) - answers_budget(tokenizer, rubric)
        if budget < 8:
            raise AnnotatorError(f"the rubric needs more than {max_tokens} tokens")
    contexts = []
    for fields in items:
        if budget is not None:
            fields, _ = fit_fields(tokenizer, rubric, fields, budget)
        contexts.append(prefix + tokenize_piece(tokenizer, prompt.render_item(rubric, fields)))

    results: list[dict[str, Decision]] = [{} for _ in items]
    all_probs: list[dict[str, list[float]]] = [{} for _ in items]
    states: list[list[np.ndarray]] = [[] for _ in items]
    layer = middle_block(model) if read_states else None
    was_training = model.training
    model.eval()
    try:
        for plan in plans:
            stems = [ctx + plan.cue + plan.lead for ctx in contexts]
            requests = [
                (i, path, tokens) for i in range(len(items)) for path, tokens in plan.decisions
            ]
            sequences = [stems[i] + list(path) for i, path, _ in requests]
            # The decision point: the cue's last token, before the lead every value starts with.
            at = [1 + len(plan.lead) if not path else 0 for _, path, _ in requests]
            logits, found_states = _logits_and_states(
                model,
                sequences,
                batch_size,
                len(prefix) if reuse_prefix else 0,
                [tokens for _, _, tokens in requests],
                (layer, at) if layer is not None else None,
            )
            for (i, _, _), state in zip(requests, found_states, strict=True):
                if state is not None:
                    states[i].append(state)
            read = {
                (i, path): dict(zip(tokens, row.tolist(), strict=True))
                for (i, path, tokens), row in zip(requests, logits, strict=True)
            }
            for i in range(len(items)):
                probs = [0.0] * len(plan.values)
                _value_probs(
                    plan.branch, (), lambda path, i=i, read=read: read[(i, path)], probs, 1.0
                )
                all_probs[i][plan.dim.name] = probs
                order = sorted(range(len(probs)), key=lambda k: (-probs[k], k))
                best, second = order[0], order[1]
                results[i][plan.dim.name] = (
                    plan.dim.values[best],
                    probs[best],
                    probs[best] - probs[second],
                )
                contexts[i] = stems[i] + plan.values[best][len(plan.lead) :]
    finally:
        model.train(was_training)
    stacked = np.stack([np.stack(rows) for rows in states]) if layer is not None else None
    return Scored(results, all_probs, stacked)


def _plan(tokenizer, dim: Dimension) -> _Plan:
    cue = tokenize_piece(tokenizer, prompt.render_cue(dim))
    values = [
        [t for p in prompt.render_answer(v) for t in tokenize_piece(tokenizer, p)]
        for v in dim.values
    ]
    lead, node = lead_and_branch(build_trie(dim, values))
    return _Plan(dim, cue, values, lead, node, _decision_paths(node, ()))


def _forced(node: Node, path: tuple[int, ...]) -> tuple[Node, tuple[int, ...]]:
    while node.value_index is None and len(node.children) == 1:
        token, node = next(iter(node.children.items()))
        path += (token,)
    return node, path


def _decision_paths(node: Node, path: tuple[int, ...]) -> list[tuple[tuple[int, ...], list[int]]]:
    """Every node where the engine reads logits (same walk as _value_probs): its path and
    the tokens of its children (the only logits read there)."""
    node, path = _forced(node, path)
    if node.value_index is not None:
        return []
    found = [(path, list(node.children))]
    for token, child in node.children.items():
        if only_leaf(child) is None:
            found += _decision_paths(child, (*path, token))
    return found


def _value_probs(
    node: Node, path: tuple[int, ...], logits_at, probs: list[float], mass: float
) -> None:
    node, path = _forced(node, path)
    if node.value_index is not None:
        probs[node.value_index] = mass
        return
    row = logits_at(path)
    tokens = list(node.children)
    shares = restricted_softmax([row[t] for t in tokens])
    for token, share in zip(tokens, shares, strict=True):
        child, share = node.children[token], mass * share
        leaf = only_leaf(child)
        if leaf is not None:
            probs[leaf] = share
        else:
            _value_probs(child, (*path, token), logits_at, probs, share)


def last_logits(
    model,
    sequences: list[list[int]],
    batch_size: int = 8,
    shared: int = 0,
    columns: list[list[int]] | None = None,
) -> list[torch.Tensor]:
    """Next-token logits after each sequence (float32, on the CPU); with `columns`, only the
    logits of those token ids for each sequence (memory: a full row is vocabulary-sized).

    Sequences are batched by length with right padding (positions stay those of an unpadded
    run), and only the last real positions go through the output layer (`logits_to_keep`):
    with a 262k vocabulary that layer is most of the cost. When `shared` > 0, the first
    `shared` tokens (the same in every sequence) are run once and their KV cache is copied
    into each batch.
    """
    return _logits_and_states(model, sequences, batch_size, shared, columns, None)[0]


@torch.no_grad()
def _logits_and_states(
    model,
    sequences: list[list[int]],
    batch_size: int,
    shared: int,
    columns: list[list[int]] | None,
    states: tuple[int, list[int]] | None,
) -> tuple[list[torch.Tensor], list[np.ndarray | None]]:
    """`last_logits`, and with `states` = (block, at): per sequence whose `at` is k > 0, the
    block's output at its k-th token from the end (float32), from the same forward pass."""
    if not sequences:
        return [], []
    device = next(model.parameters()).device
    cache = None
    if shared:
        head = torch.tensor([sequences[0][:shared]], device=device)
        cache = model(input_ids=head, use_cache=True, logits_to_keep=1).past_key_values
    out: list[torch.Tensor | None] = [None] * len(sequences)
    found_states: list[np.ndarray | None] = [None] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        tails = [sequences[i][shared:] for i in chunk]
        width = max(len(t) for t in tails)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.ones((len(chunk), shared + width), dtype=torch.long)
        for row, tail in enumerate(tails):
            ids[row, : len(tail)] = torch.tensor(tail)
            mask[row, shared + len(tail) :] = 0
        last = [len(t) - 1 for t in tails]
        keep = sorted(set(last))
        kwargs = {}
        if cache is not None:
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(chunk))
            kwargs = {"past_key_values": batch_cache, "use_cache": True}
        else:
            kwargs = {"use_cache": False}
        wanted = states is not None and any(states[1][i] for i in chunk)
        result = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            logits_to_keep=torch.tensor(keep, device=device),
            output_hidden_states=wanted,
            **kwargs,
        )
        logits = result.logits
        for row, i in enumerate(chunk):
            found = logits[row, keep.index(last[row])]
            if columns is not None:
                found = found[torch.tensor(columns[i], device=found.device)]
            out[i] = found.float().cpu()
            if wanted:
                assert states is not None
                k = states[1][i]
                if k:
                    # hidden_states[0] is the embeddings: block b's output is [b + 1].
                    row_state = result.hidden_states[states[0] + 1][row, len(tails[row]) - k]
                    found_states[i] = row_state.float().cpu().numpy()
    return out, found_states  # type: ignore[return-value]
