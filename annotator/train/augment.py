"""The paper's augmentation, done so it cannot leak into answers or validation.

Each training example draws a variant of the prompt: instructions (the rubric's own text, a
fixed wrapper of it, or a user paraphrase), the order of the inputs, and the order in which a
nominal dimension's values are listed. All variants go through `annotator.inference.prompt.segments`,
so everything but the varied text is byte-for-byte the inference prompt.

Token dropout replaces a fraction of the prompt's rubric and item tokens with a neutral token.
It never touches BOS, cues or answer tokens, and is only ever called on training examples.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from annotator.errors import AnnotatorError
from annotator.rubric import Rubric, Value
from annotator.train.args import AugmentArgs

# Wrappers around the rubric's own instructions (before, after). Plain concatenation, never
# str.format: rubric text may contain braces. The first is the identity, the inference text.
WRAPPERS = (
    ("", ""),
    ("Task: ", ""),
    ("", "\nRead the whole input before you answer."),
    ("Follow these instructions. ", ""),
    ("", "\nUse only the allowed values listed below."),
)
DROPPABLE = ("prefix", "item")  # token kinds token dropout may replace
_MAX_PARAPHRASES = 100


@dataclass(frozen=True)
class Variant:
    """How one training example's prompt differs from the inference prompt."""

    instructions: str | None = None  # None: the rubric's own text
    order: tuple[int, ...] | None = None  # None: the rubric's input order
    shown_values: dict[str, tuple[Value, ...]] | None = None  # None: values as listed


def read_paraphrases(path: Path) -> list[str]:
    """Paraphrased instructions: blocks separated by lines holding only `---`.

    The paper's template file ended in its separator and so produced an empty prompt for half
    the examples; here an empty block is an error, and a trailing separator is one too.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotatorError(f"{path}: cannot read paraphrases ({exc})") from exc
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip() == "---":
            blocks.append([])
        else:
            blocks[-1].append(line)
    found = ["\n".join(b).strip() for b in blocks]
    empty = [i + 1 for i, b in enumerate(found) if not b]
    if empty:
        raise AnnotatorError(
            f"{path}: paraphrase block(s) {empty} are empty (check the `---` lines)"
        )
    if len(found) > _MAX_PARAPHRASES:
        raise AnnotatorError(f"{path}: at most {_MAX_PARAPHRASES} paraphrases")
    if any(ord(c) < 32 and c not in "\n\t" for b in found for c in b):
        raise AnnotatorError(f"{path}: paraphrases contain control characters")
    return found


def instruction_texts(rubric: Rubric, args: AugmentArgs, paraphrases: Sequence[str]) -> list[str]:
    """The instruction texts a training example may get (the rubric's own first)."""
    own = rubric.instructions.strip()
    if not args.templates:
        return [own]
    texts = [before + own + after for before, after in WRAPPERS] + list(paraphrases)
    return list(dict.fromkeys(texts))  # unique, in order


def draw_variant(
    rubric: Rubric, args: AugmentArgs, texts: Sequence[str], rng: random.Random
) -> Variant:
    instructions = rng.choice(list(texts)) if len(texts) > 1 else None
    order = None
    if args.reorder_inputs and len(rubric.inputs) > 1:
        positions = list(range(len(rubric.inputs)))
        rng.shuffle(positions)
        order = tuple(positions)
    shown = None
    if args.shuffle_values:
        shown = {}
        for dim in rubric.dimensions:
            if dim.scale == "nominal":
                values = list(dim.values)
                rng.shuffle(values)
                shown[dim.name] = tuple(values)
    return Variant(instructions, order, shown or None)


def token_dropout(
    ids: Sequence[int],
    kinds: Sequence[str],
    rate: float,
    share: float,
    neutral_id: int,
    rng: random.Random,
) -> list[int]:
    """A copy of `ids` where, with probability `share`, round(rate * n) of the n droppable
    tokens (kinds in DROPPABLE) are replaced with `neutral_id`. Exactly one draw decides
    whether an example is hit, so the share of hit examples is `share` (the paper's code
    drew twice and hit ~69% instead of 50%)."""
    out = list(ids)
    if rate <= 0 or share <= 0 or rng.random() >= share:
        return out
    eligible = [i for i, kind in enumerate(kinds) if kind in DROPPABLE]
    count = min(len(eligible), round(rate * len(eligible)))
    for position in rng.sample(eligible, count):
        out[position] = neutral_id
    return out
