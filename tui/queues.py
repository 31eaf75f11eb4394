"""The two review queues, kept apart (no Textual here).

audit: a random sample, the only reviews used for alpha. The sample of size N is the first N
    items of one fixed random permutation of the project's items, so it is reproducible, does
    not depend on the model's answers, and growing N only adds items.
hard: "hardest first", annotated items in increasing order of their smallest margin (the
    model's least sure decision). Chosen by the model's doubt, so never counted in alpha.

The store keeps one review per (item, dimension, reviewer) whatever the queue, so the app keeps
the queues disjoint itself: the hard queue leaves out the current audit sample, and a blind
review made earlier in the hard queue for an item that the (grown) audit sample now includes is
re-filed under "audit" (`AuditQueue.promote`): the item was drawn at random and the label was
given blind, so leaving it out would bias the sample towards easy items.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from annotator.store import Label

AUDIT = "audit"
HARD = "hard"
AUDIT_SEED = 20240611  # fixed: the same project always gets the same sample


def audit_order(item_ids: Iterable[str]) -> list[str]:
    order = sorted(item_ids)
    random.Random(AUDIT_SEED).shuffle(order)
    return order


@dataclass(frozen=True)
class AuditQueue:
    sample: list[str]
    todo: list[str]  # in the sample, not yet reviewed by this reviewer
    done: int  # in the sample and reviewed by this reviewer
    promote: list[str]  # in the sample, reviewed by this reviewer in the hard queue


def audit_queue(order: list[str], size: int, my_queues: Mapping[str, str]) -> AuditQueue:
    """`my_queues`: item id -> queue of this reviewer's review of it."""
    sample = order[:max(0, size)]
    todo = [i for i in sample if i not in my_queues]
    promote = [i for i in sample if my_queues.get(i) == HARD]
    return AuditQueue(sample, todo, len(sample) - len(todo), promote)


def hard_queue(annotations: Iterable[tuple[str, dict[str, Label], int]],
               exclude: set[str]) -> list[str]:
    """Annotated items, least sure first (ties: data file order), minus `exclude`."""
    ranked = []
    for position, (item_id, labels, _truncated) in enumerate(annotations):
        if item_id in exclude or not labels:
            continue
        ranked.append((min(label.margin for label in labels.values()), position, item_id))
    return [item_id for _, _, item_id in sorted(ranked)]


def my_review_queues(reviews: Iterable[tuple[str, str, str, object, str]],
                     reviewer: str) -> dict[str, str]:
    """item id -> queue, for the items `reviewer` has reviewed (any dimension)."""
    found: dict[str, str] = {}
    for item_id, _dim, name, _value, queue in reviews:
        if name == reviewer:
            # An item reviewed in several queues (not possible through the app) counts as audit.
            if found.get(item_id) != AUDIT:
                found[item_id] = queue
    return found
