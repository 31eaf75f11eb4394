"""The prompt, as pieces. Training and inference both build token sequences from these pieces.

Layout (rubric first so its tokens are a prefix shared by every item; the item last):

    <prefix>   instructions, then each dimension's question and allowed answers
    <item>     each input under its label, then the answers header
    <cue>      "name:" of a dimension            (one per dimension, in rubric order)
    <answer>   " value" then "\\n"               (the decision the engine reads)

Each piece is tokenized on its own and the token lists are concatenated, so the boundary
between rubric and item, and between cue and answer, is the same for every item, in training
and at inference. Text is joined with plain concatenation: no `str.format`, no template
engine, so neither item text nor a rubric from a model file can reach Python attributes.
"""

from __future__ import annotations

from collections.abc import Mapping

from annotator.multilabel import prefix_line
from annotator.rubric import Dimension, Rubric, Value

PROMPT_FORMAT = 1
ANSWERS_HEADER = "### ANSWERS\n"


def render_prefix(
    rubric: Rubric,
    instructions: str | None = None,
    shown_values: Mapping[str, tuple[Value, ...]] | None = None,
) -> str:
    """The rubric part. Training may paraphrase `instructions` and reorder the values shown
    for a dimension (`shown_values`); inference uses the rubric as written."""
    parts = [(instructions if instructions is not None else rubric.instructions).strip(), "\n\n"]
    parts.append("Answer each question with exactly one of the allowed values.\n")
    for dim in rubric.dimensions:
        if dim.parent:  # a value of a multi-label dimension (annotator/multilabel.py)
            line = prefix_line(rubric, dim)
            parts.append("\n" + line if line else "")
            continue
        shown = shown_values.get(dim.name) if shown_values else None
        parts.append("\n" + dimension_line(dim, shown))
    return "".join(parts)


def dimension_line(dim: Dimension, values: tuple[Value, ...] | None = None) -> str:
    shown = values if values is not None else dim.values
    line = [dim.name, ": ", dim.question.strip(), "\nAllowed values: "]
    line.append(", ".join(str(v) for v in shown))
    if dim.anchors:
        line.append(" (" + "; ".join(k + " = " + text for k, text in dim.anchors) + ")")
    line.append("\n")
    return "".join(line)


def render_item(
    rubric: Rubric, fields: Mapping[str, str], order: tuple[int, ...] | None = None
) -> str:
    """The item's inputs under their labels. `order` lets training permute the inputs."""
    inputs = rubric.inputs if order is None else tuple(rubric.inputs[i] for i in order)
    parts = []
    for field in inputs:
        parts.append("\n### " + field.label + "\n" + fields[field.column].strip() + "\n")
    parts.append("\n" + ANSWERS_HEADER)
    return "".join(parts)


def render_cue(dim: Dimension) -> str:
    return dim.name + ":"


def render_answer(value: Value) -> list[str]:
    """The answer pieces: the value with its leading space, then the line end."""
    return [" " + str(value), "\n"]


def segments(
    rubric: Rubric,
    fields: Mapping[str, str],
    answers: Mapping[str, Value] | None = None,
    order: tuple[int, ...] | None = None,
    instructions: str | None = None,
    shown_values: Mapping[str, tuple[Value, ...]] | None = None,
) -> list[tuple[str, str]]:
    """The whole prompt as (kind, text) pieces, each tokenized on its own (the first with BOS).

    kinds: "prefix", "item", "cue", "answer". With `answers`, every dimension's cue is followed
    by its answer pieces (training); without, only the first cue (what inference evaluates
    before its first decision). The engine builds exactly this sequence, piece by piece.
    """
    prefix = render_prefix(rubric, instructions, shown_values)
    pieces = [("prefix", prefix), ("item", render_item(rubric, fields, order))]
    for dim in rubric.dimensions:
        pieces.append(("cue", render_cue(dim)))
        if answers is None:
            break
        pieces += [("answer", text) for text in render_answer(answers[dim.name])]
    return pieces
