"""Validation: the engine's decoding on held-out items, scored against the human labels.

Alpha is Krippendorff's, per dimension, at the dimension's own level (annotator.agreement),
never pooled across dimensions. An undefined alpha (too few items, or a single value in all)
stays undefined: it is never replaced by a number. The validation loss is the answer-token
loss on the un-augmented inference prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from annotator.agreement import agreement
from annotator.rubric import Rubric
from annotator.train.data import Example, LabeledItem, batches
from annotator.train.loss import answer_loss
from annotator.train.scoring import Decision


@dataclass
class Evaluation:
    step: int
    epoch: float
    val_loss: float
    alpha: dict[str, float | None]
    accuracy: dict[str, float]
    n: int
    train_loss: float | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def mean_alpha(self) -> float | None:
        defined = [a for a in self.alpha.values() if a is not None]
        return sum(defined) / len(defined) if defined else None

    def key(self) -> tuple[float, float]:
        """Best = highest mean alpha; undefined alpha (tiny or one-valued validation sets)
        ranks below any defined one, and validation loss breaks ties."""
        mean = self.mean_alpha
        return (mean if mean is not None else -math.inf, -self.val_loss)

    def as_dict(self) -> dict:
        return {
            "step": self.step,
            "epoch": round(self.epoch, 3),
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "alpha": self.alpha,
            "mean_alpha": self.mean_alpha,
            "accuracy": self.accuracy,
            "n": self.n,
            "notes": self.notes,
        }


def evaluation(
    rubric: Rubric,
    items: list[LabeledItem],
    scores: list[dict[str, Decision]],
    step: int,
    epoch: float,
    val_loss: float,
) -> Evaluation:
    alphas: dict[str, float | None] = {}
    accuracy: dict[str, float] = {}
    notes: dict[str, str] = {}
    for dim in rubric.dimensions:
        human = [i.labels[dim.name] for i in items]
        model = [s[dim.name][0] for s in scores]
        found = agreement(dim, ("human", "model"), [human, model], bootstrap=0)
        alphas[dim.name] = found.alpha
        if found.note:
            notes[dim.name] = found.note
        accuracy[dim.name] = sum(h == m for h, m in zip(human, model, strict=True)) / max(
            len(items), 1
        )
    return Evaluation(step, epoch, val_loss, alphas, accuracy, len(items), notes=notes)


@torch.no_grad()
def validation_loss(model, examples: list[Example], batch_size: int, pad_id: int, device) -> float:
    """Mean answer-token loss over `examples`, in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for micro in batches(examples, batch_size):
            loss_sum, n = answer_loss(model, micro, pad_id, device)
            total += loss_sum.item()
            count += n
    finally:
        model.train(was_training)
    return total / max(count, 1)
