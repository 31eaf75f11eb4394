"""The step protocol: how the engine's decision logic talks to a driver that evaluates tokens.

Labelling an item is a generator of steps (`Steps`, made by `Engine._item_steps`). Each step is
(position, tokens to evaluate there, token ids whose logits are wanted after the last of them
([] for none), where the hidden state is wanted: 0 nowhere, k at the k-th token from the end).
A driver evaluates each step and sends back a `Reading` (or None when the step asked for no
logits); the generator's return value is the item's `RawItem`. The sequential driver
(`Engine._run_steps`) and the parallel one (annotator/inference/parallel.py) run the same
steps, so the decision logic exists once.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Reading(NamedTuple):
    """What a driver sends back for a step that asked for logits."""

    logits: list[float]  # at the candidate ids, in their order
    hidden: np.ndarray | None  # the hidden state there (the tapped block), when asked for


@dataclass(frozen=True)
class RawItem:
    """What the model's pass gives for an item, before any readout."""

    probs: list[list[float]]  # per dimension, every value's probability
    hidden: np.ndarray | None  # (dimensions, n_embd), or None when not read


# (position, tokens to evaluate there, token ids whose logits are wanted after the last one,
# where the hidden state is wanted: 0 nowhere, k at the k-th token from the end)
Step = tuple[int, list[int], list[int], int]
StepResult = RawItem  # what an item's steps return
Steps = Generator[Step, Reading | None, StepResult]
