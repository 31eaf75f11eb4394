"""The three review queues, kept apart (no Textual here).

audit: a random sample, the only reviews used for alpha. The sample of size N is the first N
    items of one fixed random permutation of the project's items, so it is reproducible, does
    not depend on the model's answers, and growing N only adds items.
hard: "hardest first", annotated items in increasing order of their smallest margin (the
    model's least sure decision). Chosen by the model's doubt, so never counted in alpha.
teach: a batch chosen to improve the calibration head (annotator/calibration/teach.py):
    doubtful under the current head and spread over the data. Never counted in alpha; heads
    are fitted on its reviews.

The store keeps a review per (item, dimension, reviewer, queue), so the queues are apart by
construction: the audit queue asks for every sampled item this reviewer has not reviewed *in
the audit queue*, blind, even one they reviewed earlier in the hard queue (where they may have
seen the model's answer: that review stays filed as hard and never counts towards alpha). The
hard and teach queues leave out the current audit sample and every item this reviewer has
reviewed in any queue.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from annotator.calibration.teach import TEACH, teach_queue
from annotator.project.reviews import FIT_QUEUES
from annotator.project.store import Label, Store

AUDIT = "audit"
HARD = "hard"
CYCLE = (AUDIT, HARD, TEACH)  # the order `t` switches queues in
AUDIT_SEED = 20240611  # fixed: the same project always gets the same sample
DEFAULT_AUDIT_SIZE = 20  # offered when the reviewer has not reviewed more of the sample


def audit_order(item_ids: Iterable[str]) -> list[str]:
    order = sorted(item_ids)
    random.Random(AUDIT_SEED).shuffle(order)
    return order


def check_audit_size(text: str, total: int) -> str | None:
    """What is wrong with `text` as an audit sample size of a project of `total` items."""
    if not text.isdigit() or not 1 <= int(text) <= total:
        return f"a whole number from 1 to {total}"
    return None


@dataclass(frozen=True)
class AuditQueue:
    sample: list[str]
    todo: list[str]  # in the sample, not yet reviewed by this reviewer in the audit queue
    done: int  # in the sample and reviewed by this reviewer in the audit queue


def audit_queue(order: list[str], size: int, audited: Collection[str]) -> AuditQueue:
    """`audited`: the items this reviewer has reviewed in the audit queue (other queues'
    reviews do not count: a hard-queue review may not be blind)."""
    sample = order[: max(0, size)]
    todo = [i for i in sample if i not in audited]
    return AuditQueue(sample, todo, len(sample) - len(todo))


def hard_queue(
    annotations: Iterable[tuple[str, dict[str, Label], int]], exclude: set[str]
) -> list[str]:
    """Annotated items, least sure first (ties: data file order), minus `exclude`."""
    ranked = []
    for position, (item_id, labels, _truncated) in enumerate(annotations):
        if item_id in exclude or not labels:
            continue
        ranked.append((min(label.margin for label in labels.values()), position, item_id))
    return [item_id for _, _, item_id in sorted(ranked)]


def my_reviewed_items(
    reviews: Iterable[tuple[str, str, str, object, str]], reviewer: str, queue: str | None = None
) -> set[str]:
    """The items `reviewer` has reviewed (any dimension), in `queue` or in any queue."""
    return {
        item_id
        for item_id, _dim, name, _value, in_queue in reviews
        if name == reviewer and (queue is None or in_queue == queue)
    }


def next_queue(queue: str) -> str:
    return CYCLE[(CYCLE.index(queue) + 1) % len(CYCLE)] if queue in CYCLE else AUDIT


def teach_todo(store: Store, run_id: int | None, exclude: Collection[str]) -> list[str]:
    """The next teach batch of run `run_id` (the latest: a calibrated run's margins are its
    head's), minus `exclude` (the audit sample and this reviewer's reviewed items)."""
    rubric = store.rubric()
    if run_id is None or rubric is None:
        return []
    covered = {item_id for item_id, *_, queue in store.reviews() if queue in FIT_QUEUES}
    return teach_queue(store.outputs(run_id), len(rubric.dimensions), exclude, covered)


@dataclass(frozen=True)
class Built:
    """One queue as built for a reviewer: the items to review, in order, with the model's
    answers of run `run_id` and the audit sample (left out of the other queues)."""

    todo: list[str]
    model: dict[str, dict[str, Label]]
    audit: AuditQueue


def build(store: Store, run_id: int | None, reviewer: str, queue: str, audit_size: int) -> Built:
    reviews = store.reviews()
    mine = my_reviewed_items(reviews, reviewer)
    audited = my_reviewed_items(reviews, reviewer, AUDIT)
    audit = audit_queue(audit_order(store.item_ids()), audit_size, audited)
    annotations = store.annotations(run_id) if run_id is not None else []
    model = {item_id: labels for item_id, labels, _ in annotations}
    if queue == AUDIT:
        todo = list(audit.todo)
    elif queue == TEACH:
        todo = teach_todo(store, run_id, mine | set(audit.sample))
    else:
        todo = hard_queue(annotations, mine | set(audit.sample))
    return Built(todo, model, audit)
