"""The training loss: cross-entropy on answer tokens only.

Prompt tokens (rubric, item, cues) are context, never targets: the model learns to answer,
not to reproduce rubrics or items.
"""

from __future__ import annotations

import torch

from annotator.train.data import Example


def answer_loss(model, examples: list[Example], pad_id: int, device) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of the answer tokens of `examples`, and how many there are.

    Only the positions that predict an answer token go through the output layer
    (`logits_to_keep`): the loss needs nothing else, and with a 262k vocabulary that layer
    costs more than the rest of a small model.
    """
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    predicting: list[list[int]] = []  # per row: positions whose next token is an answer token
    for row, e in enumerate(examples):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        mask[row, : len(e.ids)] = 1
        predicting.append(
            [p - 1 for p, is_answer in enumerate(e.answer_mask) if is_answer and p > 0]
        )
    keep = sorted({p for row in predicting for p in row})
    index = {p: k for k, p in enumerate(keep)}
    targets = torch.full((len(examples), len(keep)), -100, dtype=torch.long)
    for row, positions in enumerate(predicting):
        for p in positions:
            targets[row, index[p]] = ids[row, p + 1]
    logits = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        logits_to_keep=torch.tensor(keep, device=device),
        use_cache=False,
    ).logits
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.to(device).reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )
    return loss, int((targets != -100).sum())
