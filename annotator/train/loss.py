"""The training loss on answer tokens only: cross-entropy against each token's target
distribution (one-hot, or the raters' distribution: train.targets), plus the expected-score
term where asked.

Prompt tokens (rubric, item, cues) are context, never targets: the model learns to answer,
not to reproduce rubrics or items.
"""

from __future__ import annotations

import torch

from annotator.train.data import Example


def soft_cross_entropy(
    logits: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Sum over entries of -weight * log softmax(logits[row])[token] (full vocabulary).

    With one entry of weight 1 per row this is `cross_entropy(..., reduction="sum")`.
    """
    lse = torch.logsumexp(logits, dim=-1)
    return -(weights * (logits[rows, tokens] - lse[rows])).sum()


def expected_score_loss(
    children: torch.Tensor, positions: torch.Tensor, target: float
) -> torch.Tensor:
    """(sum softmax(children) * positions - target)^2: the probability-weighted position of
    a dimension's values against the raters' mean position (both in [0, 1])."""
    expected = (torch.softmax(children, dim=-1) * positions).sum()
    return (expected - target) ** 2


def answer_loss(model, examples: list[Example], pad_id: int, device) -> tuple[torch.Tensor, int]:
    """Summed loss of the answer tokens of `examples`, and how many answer tokens there are.

    Only the positions that predict an answer token go through the output layer
    (`logits_to_keep`): the loss needs nothing else, and with a 262k vocabulary that layer
    costs more than the rest of a small model.
    """
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    answers: list[list[int]] = []  # per row: the answer tokens' positions
    for row, e in enumerate(examples):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        mask[row, : len(e.ids)] = 1
        answers.append([p for p, is_answer in enumerate(e.answer_mask) if is_answer and p > 0])
    keep = sorted({p - 1 for row in answers for p in row})
    index = {p: k for k, p in enumerate(keep)}
    rows, tokens, weights = [], [], []
    for row, (e, positions) in enumerate(zip(examples, answers, strict=True)):
        for p in positions:
            for token, weight in e.soft.get(p, [(e.ids[p], 1.0)]):
                rows.append(row * len(keep) + index[p - 1])
                tokens.append(token)
                weights.append(weight)
    logits = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        logits_to_keep=torch.tensor(keep, device=device),
        use_cache=False,
    ).logits.float()
    flat = logits.reshape(-1, logits.shape[-1])
    loss = soft_cross_entropy(
        flat,
        torch.tensor(rows, device=device),
        torch.tensor(tokens, device=device),
        torch.tensor(weights, device=device),
    )
    for row, e in enumerate(examples):
        for p, children, positions, target in e.expected:
            scores = logits[row, index[p - 1], torch.tensor(children, device=device)]
            loss = loss + expected_score_loss(
                scores, torch.tensor(positions, device=device), target
            )
    return loss, sum(len(p) for p in answers)
