"""What each answer token is trained towards: one-hot or the raters' distribution, class
weights on nominal dimensions, and the expected-score term on ordinal and interval ones.

A dimension's answer is a path through its values' token trie (the engine's decoding, see
train.scoring). The training sequence carries the taught value (the majority); at each
token of its path the target is the raters' distribution over the trie's branches there,
conditioned on the path so far (the share of the raters' mass under each child). Along a
one-hot target that is the taught token with weight 1, so single-rating data trains exactly
as plain cross-entropy did.

Expected score (`--loss expected|both`, ordinal and interval dimensions): at the dimension's
first decision (after the tokens every value starts with), the softmax over the children's
tokens gives each value's probability, as the engine reads it; the probability-weighted
position (value index scaled to [0, 1]) is pulled towards the raters' mean position by a
squared error. A child holding several values (values sharing more than their lead) counts
at the mean position of its values. `expected` alone drops the dimension's cross-entropy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from annotator.inference import prompt
from annotator.inference.trie import Node, build_trie, lead_and_branch
from annotator.rubric import Dimension, Rubric, Value

ORDERED = ("ordinal", "interval")
log = logging.getLogger("train")


@dataclass(frozen=True)
class Choices:
    """The loss settings once resolved (what the run records)."""

    soft: bool  # raters' distribution (True) or the majority value, one-hot
    loss: str  # ce | expected | both, on ordinal and interval dimensions
    class_weights: dict[str, dict[Value, float]] | None  # nominal dimension -> value -> weight


def resolve(args, rubric: Rubric, train: Sequence) -> Choices:
    """`LossArgs` made concrete for the training items: auto target, class weights."""
    rated = max((i.ratings for i in train), default=1)
    soft = args.target == "soft" or (args.target == "auto" and rated > 1)
    weights = balanced_weights(rubric, train) if args.class_weights == "balanced" else None
    choices = Choices(soft, args.loss, weights)
    log.info(
        "targets: %s (most ratings of an item: %d); ordinal/interval loss %s; "
        "nominal class weights %s",
        "the raters' distribution" if soft else "the majority value",
        rated,
        args.loss,
        args.class_weights,
    )
    return choices


def balanced_weights(rubric: Rubric, items: Sequence) -> dict[str, dict[Value, float]]:
    """Per nominal dimension, value -> n / (k * count): counts are the training items' target
    shares (a soft target adds its shares), k the number of values seen. A value absent
    from training gets the largest weight seen."""
    found: dict[str, dict[Value, float]] = {}
    for dim in rubric.dimensions:
        if dim.scale != "nominal":
            continue
        counts = dict.fromkeys(dim.values, 0.0)
        for item in items:
            for value, share in item.target(dim.name).items():
                counts[value] += share
        seen = {v: c for v, c in counts.items() if c > 0}
        total = sum(seen.values())
        weights = {v: total / (len(seen) * c) for v, c in seen.items()}
        top = max(weights.values(), default=1.0)
        found[dim.name] = {v: weights.get(v, top) for v in dim.values}
    return found


def _values_under(node: Node) -> list[int]:
    if node.value_index is not None:
        return [node.value_index]
    return [i for child in node.children.values() for i in _values_under(child)]


class Targets:
    """Builds the per-token targets of examples for one rubric, tokenizer and `Choices`."""

    def __init__(self, tokenizer, rubric: Rubric, choices: Choices):
        from annotator.train.data import tokenize_piece

        self.rubric, self.choices = rubric, choices
        self.paths: dict[str, list[list[int]]] = {}
        self.tries: dict[str, Node] = {}
        for dim in rubric.dimensions:
            values = [
                [t for p in prompt.render_answer(v) for t in tokenize_piece(tokenizer, p)]
                for v in dim.values
            ]
            self.paths[dim.name] = values
            self.tries[dim.name] = build_trie(dim, values)

    def record(self) -> dict:
        """What provenance keeps: the target kind, the loss and the class weights."""
        c = self.choices
        weights = c.class_weights
        return {
            "target": "soft" if c.soft else "majority",
            "ordinal_interval_loss": c.loss,
            "class_weights": "none" if weights is None else "balanced",
            "class_weight_values": (
                None
                if weights is None
                else {d: [[v, round(w, 6)] for v, w in ws.items()] for d, ws in weights.items()}
            ),
        }

    def fill(self, example, item) -> None:
        """Set `example.soft` and `example.expected` for `item`'s answers in `example`."""
        runs: list[list[int]] = []
        for p, kind in enumerate(example.kinds):
            if kind == "answer":
                if runs and runs[-1][-1] == p - 1:
                    runs[-1].append(p)
                else:
                    runs.append([p])
        assert len(runs) == len(self.rubric.dimensions), "one answer per dimension"
        for dim, run in zip(self.rubric.dimensions, runs, strict=True):
            self._dimension(example, item, dim, run)

    def _dimension(self, example, item, dim: Dimension, run: list[int]) -> None:
        c = self.choices
        shares = item.target(dim.name) if c.soft else {item.labels[dim.name]: 1.0}
        mass = [shares.get(v, 0.0) for v in dim.values]
        path = self.paths[dim.name][dim.values.index(item.labels[dim.name])]
        assert [example.ids[p] for p in run] == path, "answer tokens are the taught value's"
        ordered = dim.scale in ORDERED
        weight = 1.0
        if c.class_weights and dim.name in c.class_weights:
            weights = c.class_weights[dim.name]
            weight = sum(weights[v] * s for v, s in shares.items())
        if ordered and c.loss == "expected":
            weight = 0.0
        node = self.tries[dim.name]
        for p, token in zip(run, path, strict=True):
            if len(node.children) > 1 or weight != 1.0 or c.soft:
                under = {
                    t: sum(mass[i] for i in _values_under(n)) for t, n in node.children.items()
                }
                total = sum(under.values())
                example.soft[p] = [(t, weight * m / total) for t, m in under.items() if m > 0]
            node = node.children[token]
        if ordered and c.loss in ("expected", "both"):
            lead, branch = lead_and_branch(self.tries[dim.name])
            scale = max(len(dim.values) - 1, 1)
            tokens, positions = [], []
            for t, child in branch.children.items():
                under = _values_under(child)
                tokens.append(t)
                positions.append(sum(under) / len(under) / scale)
            mean = sum(i * m for i, m in enumerate(mass)) / sum(mass) / scale
            example.expected.append((run[len(lead)], tokens, positions, mean))
