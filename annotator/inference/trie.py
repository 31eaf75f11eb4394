"""The allowed values of a dimension as a token trie, shared by the engine (llama.cpp) and the
training scorer (torch), so both resolve values that share leading tokens the same way.

A value's probability is the product, along its token path, of the softmax restricted to the
tokens that can follow at each branching node; nodes with one child involve no choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from annotator.errors import AnnotatorError
from annotator.rubric import Dimension


@dataclass
class Node:
    children: dict[int, Node] = field(default_factory=dict)
    value_index: int | None = None  # set on leaves


def build_trie(dim: Dimension, sequences: list[list[int]]) -> Node:
    """The trie of `sequences` (one token list per value of `dim`, ending in the line end)."""
    root = Node()
    for index, seq in enumerate(sequences):
        node = root
        for token in seq:
            node = node.children.setdefault(token, Node())
        if node.value_index is not None or node.children:
            raise AnnotatorError(
                f"dimension {dim.name!r}: values {dim.values[index]!r} and another value "
                "tokenize the same way for this model"
            )
        node.value_index = index
    return root


def lead_and_branch(root: Node) -> tuple[list[int], Node]:
    """The tokens every value starts with (no choice there) and the node where values branch."""
    lead: list[int] = []
    node = root
    while node.value_index is None and len(node.children) == 1:
        token, node = next(iter(node.children.items()))
        lead.append(token)
    return lead, node


def only_leaf(node: Node) -> int | None:
    """The value index when only one value lies below `node` (no decision left), else None."""
    while node.value_index is None:
        if len(node.children) != 1:
            return None
        node = next(iter(node.children.values()))
    return node.value_index


def restricted_softmax(logits: list[float]) -> list[float]:
    """Softmax over just these logits (the allowed next tokens), computed stably."""
    top = max(logits)
    weights = [math.exp(x - top) for x in logits]
    total = sum(weights)
    return [w / total for w in weights]
