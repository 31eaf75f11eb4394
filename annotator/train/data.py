"""Labelled files to token sequences: reading, the split, and the prompt as tokens.

Token sequences are built exactly as the engine builds them: `annotator.inference.prompt.segments`
gives the pieces, each piece is tokenized on its own (the first after the model's BOS), and
the token lists are concatenated. Piece tokenization uses `split_special_tokens=True`, the
counterpart of llama.cpp's `special=False`: control-token text inside an item stays text.
Loss is taken only on "answer" tokens. No item text is ever logged from here.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from annotator.data import Skipped, read_items
from annotator.errors import AnnotatorError
from annotator.inference import prompt
from annotator.multilabel import as_answers, expand
from annotator.rubric import Rubric, Value
from annotator.train.args import AugmentArgs, DataArgs
from annotator.train.augment import Variant, draw_variant, token_dropout
from annotator.train.ratings import distribution, majority, project_ratings

CUT_MARKER = " [...]"


@dataclass(frozen=True)
class LabeledItem:
    id: str
    source: str  # file name
    row: int
    fields: dict[str, str]  # input column -> text
    labels: dict[str, Value]  # dimension -> parsed value (several raters: the majority)
    targets: dict[str, dict] = field(default_factory=dict)
    """dimension -> {value: share of the raters}; empty: one rating, one-hot on `labels`."""
    ratings: int = 1  # how many raters rated the item

    def target(self, dim: str) -> dict:
        return self.targets.get(dim) or {self.labels[dim]: 1.0}


@dataclass(frozen=True)
class LabeledData:
    items: list[LabeledItem]
    skipped: list[tuple[str, Skipped]]  # (file name, skipped row)
    sha256: list[str]  # one per file, in the order given


@dataclass(frozen=True)
class Split:
    train: list[LabeledItem]
    validation: list[LabeledItem]
    record: dict  # what provenance keeps: seed, fraction, counts, validation ids


@dataclass
class Example:
    """One token sequence: ids, each token's piece kind ("bos", "prefix", "item", "cue",
    "answer"), and the item it came from."""

    item_id: str
    ids: list[int]
    kinds: list[str]
    truncated: int = 0  # item tokens cut to fit
    answer_mask: list[bool] = field(init=False)
    soft: dict = field(default_factory=dict)  # position -> [(token, weight)] (train.targets)
    expected: list = field(default_factory=list)  # expected-score terms (train.targets)

    def __post_init__(self) -> None:
        self.answer_mask = [k == "answer" for k in self.kinds]


# -- reading -------------------------------------------------------------------------------


def read_labeled(args: DataArgs, rubric: Rubric) -> LabeledData:
    """Every labelled item of every file (or of `args.project`), and every row skipped with
    its reason.

    A row needs all inputs and a valid value for every dimension. Ids follow `annotate`'s
    rules; with several files each needs ids. Rows sharing an id are several ratings of one
    item (one per rater: see train.ratings) and must have the same inputs; with
    `args.rater_col`, a rater's second row for an item is skipped.
    """
    inputs = [f.column for f in rubric.inputs]
    dims = [d.name for d in rubric.dimensions]
    clash = sorted(set(inputs) & set(dims))
    if clash:
        raise AnnotatorError(f"{args.rubric}: {clash} are both inputs and dimensions")
    if args.project is not None:
        return _project_items(args.project, rubric)
    several = len(args.paths) > 1
    extra = [args.rater_col] if args.rater_col else []
    skipped: list[tuple[str, Skipped]] = []
    digests: list[str] = []
    first: dict[str, tuple[str, int, dict[str, str]]] = {}  # id -> file, row, fields
    ratings: dict[str, list[dict[str, Value]]] = {}
    raters: set[tuple[str, str]] = set()
    for path in args.paths:
        rows, found, bad = read_items(
            path, inputs + dims + extra, args.id_col, args.id_col_given or several, repeats=True
        )
        digests.append(rows.sha256)
        skipped += [(path.name, s) for s in bad]
        for item in found:
            labels: dict[str, Value] = {}
            problem = None
            for dim in rubric.dimensions:
                try:
                    labels[dim.name] = dim.parse_value(item.fields[dim.name])
                except ValueError as exc:
                    problem = f"{dim.name}: {exc}"
                    break
            fields = {c: item.fields[c] for c in inputs}
            seen = first.get(item.id)
            if problem is None and seen is not None and seen[2] != fields:
                problem = f"duplicate id with other inputs (first in {seen[0]} row {seen[1]})"
            rater = (item.id, item.fields[args.rater_col]) if args.rater_col else None
            if problem is None and rater is not None and rater in raters:
                problem = f"a second rating by the same {args.rater_col}"
            if problem:
                skipped.append((path.name, Skipped(item.row, item.id, problem)))
                continue
            if rater is not None:
                raters.add(rater)
            first.setdefault(item.id, (path.name, item.row, fields))
            ratings.setdefault(item.id, []).append(labels)
    items = [
        _rated_item(rubric, item_id, name, row, fields, ratings[item_id])
        for item_id, (name, row, fields) in first.items()
    ]
    if len(items) < 2:
        raise AnnotatorError(f"{len(items)} usable labelled item(s): training needs at least 2")
    return LabeledData(items, skipped, digests)


def _rated_item(
    rubric: Rubric, item_id: str, source: str, row: int, fields: dict, rated: list
) -> LabeledItem:
    # Multi-label: each rater's set as a yes or no per value (annotator/multilabel.py).
    rated, rubric = [as_answers(rubric, r) for r in rated], expand(rubric)
    targets = distribution(rubric, rated)
    labels = majority(rubric, targets)
    return LabeledItem(
        item_id, source, row, fields, labels, targets if len(rated) > 1 else {}, len(rated)
    )


def _project_items(path: Path, rubric: Rubric) -> LabeledData:
    """Items of a project with at least one review; a dimension no reviewer rated skips the
    item (training needs every dimension's answer)."""
    found, digest = project_ratings(path, rubric)
    items, skipped = [], []
    for row, (item_id, fields, rated) in enumerate(found, 1):
        item = _rated_item(rubric, item_id, path.name, row, fields, rated)
        missing = [d.name for d in expand(rubric).dimensions if d.name not in item.labels]
        if missing:
            skipped.append((path.name, Skipped(row, item_id, f"{missing[0]}: not reviewed")))
        else:
            items.append(item)
    if len(items) < 2:
        raise AnnotatorError(
            f"{path}: {len(items)} item(s) reviewed on every dimension: training needs at least 2"
        )
    return LabeledData(items, skipped, [digest])


# -- the split ------------------------------------------------------------------------------


def split_items(items: Sequence[LabeledItem], fraction: float, seed: int) -> Split:
    """Hold out `fraction` of the items, by item, before any augmentation.

    Items with identical inputs form one group and land on the same side, so a text repeated
    under two ids cannot be both trained on and validated on. Seeded and deterministic.
    """
    if not 0 < fraction < 1:
        raise AnnotatorError(f"--val-fraction must be between 0 and 1, not {fraction}")
    groups: dict[str, list[LabeledItem]] = {}
    for item in items:
        key = hashlib.sha256(json.dumps(item.fields, sort_keys=True).encode("utf-8")).hexdigest()
        groups.setdefault(key, []).append(item)
    if len(groups) < 2:
        raise AnnotatorError("all items have the same inputs: nothing to validate on")
    order = list(groups)
    random.Random(f"split:{seed}").shuffle(order)
    want = min(max(1, round(fraction * len(items))), len(items) - 1)
    held: set[str] = set()
    count = 0
    for key in order:
        if count >= want or len(held) == len(groups) - 1:
            break
        held.add(key)
        count += len(groups[key])
    validation = [i for i in items if _group_key(i) in held]
    train = [i for i in items if _group_key(i) not in held]
    train_ids = sorted(i.id for i in train)
    record = {
        "seed": seed,
        "val_fraction": fraction,
        "by": "item (identical inputs grouped), before augmentation",
        "train_count": len(train),
        "train_ids_sha256": hashlib.sha256("\n".join(train_ids).encode("utf-8")).hexdigest(),
        "validation_count": len(validation),
        "validation_ids": [i.id for i in validation],
    }
    return Split(train, validation, record)


def _group_key(item: LabeledItem) -> str:
    return hashlib.sha256(json.dumps(item.fields, sort_keys=True).encode("utf-8")).hexdigest()


# -- tokens ---------------------------------------------------------------------------------


def bos_ids(tokenizer) -> list[int]:
    """What the tokenizer itself puts before text (Gemma, Llama: BOS; Qwen: nothing).

    Read from the tokenizer's own behaviour rather than from `bos_token`, which some
    tokenizers define without ever adding it; GGUF conversion records the same choice.
    """
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def tokenize_piece(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def encode_pieces(
    tokenizer, pieces: Sequence[tuple[str, str]], bos: Sequence[int]
) -> tuple[list[int], list[str]]:
    """Token ids and kinds of `segments()` pieces: each piece on its own, BOS first."""
    ids, kinds = list(bos), ["bos"] * len(bos)
    for kind, text in pieces:
        piece = tokenize_piece(tokenizer, text)
        ids += piece
        kinds += [kind] * len(piece)
    return ids, kinds


def answers_budget(tokenizer, rubric: Rubric) -> int:
    """Tokens every dimension's cue plus its longest value take (the engine's reserve)."""
    total = 0
    for dim in rubric.dimensions:
        cue = len(tokenize_piece(tokenizer, prompt.render_cue(dim)))
        longest = max(
            sum(len(tokenize_piece(tokenizer, p)) for p in prompt.render_answer(v))
            for v in dim.values
        )
        total += cue + longest
    return total


def fit_fields(
    tokenizer,
    rubric: Rubric,
    fields: Mapping[str, str],
    budget: int,
    order: tuple[int, ...] | None = None,
) -> tuple[dict[str, str], int]:
    """The item's fields cut to `budget` item tokens, and how many tokens were cut.

    The engine's rule (annotator.inference.engine.Engine.fit_item): cut the last input (rubric order)
    from its end, mark it " [...]", then the one before it, and so on.
    """
    fields = dict(fields)
    tokens = tokenize_piece(tokenizer, prompt.render_item(rubric, fields, order))
    overflow = len(tokens) - budget
    if overflow <= 0:
        return fields, 0
    original = len(tokens)
    for inp in reversed(rubric.inputs):
        while overflow > 0:
            text_tokens = tokenize_piece(tokenizer, fields[inp.column].strip())
            keep = len(text_tokens) - overflow - 8  # 8: room for the marker and re-merging
            if keep <= 0:
                fields[inp.column] = "[...]"
            else:
                kept = tokenizer.decode(
                    text_tokens[:keep],
                    skip_special_tokens=False,
                    clean_up_tokenization_spaces=False,
                )
                fields[inp.column] = kept.rstrip() + CUT_MARKER
            tokens = tokenize_piece(tokenizer, prompt.render_item(rubric, fields, order))
            overflow = len(tokens) - budget
            if keep <= 0:
                break
        if overflow <= 0:
            return fields, original - len(tokens)
    raise AnnotatorError(f"the input labels alone do not fit {budget} tokens; raise --max-tokens")


class Encoder:
    """Builds examples for one rubric and tokenizer (BOS and the answer reserve computed once)."""

    def __init__(self, tokenizer, rubric: Rubric, max_tokens: int, targets=None):
        self.targets = targets  # train.targets.Targets; None: one-hot on the labels
        self.tokenizer = tokenizer
        self.rubric = rubric
        self.max_tokens = max_tokens
        self.bos = bos_ids(tokenizer)
        self.reserve = answers_budget(tokenizer, rubric)

    def example(self, item: LabeledItem, variant: Variant | None = None) -> Example:
        """The item with its answers; `variant` None is the inference prompt exactly."""
        v = variant or Variant()
        prefix = prompt.render_prefix(self.rubric, v.instructions, v.shown_values)
        prefix_len = len(self.bos) + len(tokenize_piece(self.tokenizer, prefix))
        budget = self.max_tokens - prefix_len - self.reserve
        if budget < 8:
            raise AnnotatorError(f"the rubric needs more than --max-tokens {self.max_tokens}")
        fields, cut = fit_fields(self.tokenizer, self.rubric, item.fields, budget, v.order)
        pieces = prompt.segments(
            self.rubric,
            fields,
            answers=item.labels,
            order=v.order,
            instructions=v.instructions,
            shown_values=v.shown_values,
        )
        ids, kinds = encode_pieces(self.tokenizer, pieces, self.bos)
        example = Example(item.id, ids, kinds, cut)
        if self.targets is not None:
            self.targets.fill(example, item)
        return example


def neutral_token(tokenizer) -> int:
    """The id token dropout writes: pad, else unk (never id 0 by assumption)."""
    for token_id in (tokenizer.pad_token_id, tokenizer.unk_token_id):
        if token_id is not None:
            return int(token_id)
    raise AnnotatorError("the tokenizer has neither a pad nor an unk token for token dropout")


def training_examples(
    encoder: Encoder,
    items: Sequence[LabeledItem],
    augment: AugmentArgs,
    texts: Sequence[str],
    neutral_id: int,
    seed: int,
    epoch: int,
) -> list[Example]:
    """One epoch's examples: fresh variants and dropout per epoch, items in a seeded order."""
    rng = random.Random(f"augment:{seed}:{epoch}")
    order = list(items)
    rng.shuffle(order)
    examples = []
    for item in order:
        example = encoder.example(item, draw_variant(encoder.rubric, augment, texts, rng))
        example.ids = token_dropout(
            example.ids,
            example.kinds,
            augment.token_dropout,
            augment.token_dropout_share,
            neutral_id,
            rng,
        )
        examples.append(example)
    return examples


def validation_examples(encoder: Encoder, items: Sequence[LabeledItem]) -> list[Example]:
    """Validation examples: the inference prompt, never augmented, never dropped out."""
    return [encoder.example(item) for item in items]


def batches(examples: Sequence[Example], size: int) -> list[list[Example]]:
    return [list(examples[i : i + size]) for i in range(0, len(examples), size)]


def write_validation(path: Path, rubric: Rubric, items: Sequence[LabeledItem]) -> None:
    """RUN_DIR/validation.jsonl: id, input columns and the human labels of held-out items."""
    with path.open("w", encoding="utf-8") as handle:
        for item in items:
            record: dict[str, object] = {"id": item.id}
            record.update({f.column: item.fields[f.column] for f in rubric.inputs})
            record.update(item.labels)
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
