"""Train tests, part 2: labelled files, the split, augmentation and token dropout, the loss mask.

These guard against the defects of the paper's code: a split after augmentation (items in
both sets), an empty template, dropout on answer tokens, on validation batches, with a real
token as "blank", or at the wrong rate."""

from __future__ import annotations  # noqa: I001  (`import train` must precede torch)

import math
import random

import annotator.train  # noqa: F401  (first, before torch: OpenMP wait policy and hub settings)

import pytest
import torch
from helpers.train import SMOKE_RUBRIC, gemma_tokenizer, smoke_rows, smoke_rubric, write_labeled

from annotator.inference import prompt
from annotator.errors import AnnotatorError
from annotator.train.args import AugmentArgs, DataArgs
from annotator.train.augment import DROPPABLE, instruction_texts, read_paraphrases, token_dropout
from annotator.train.ratings import distribution, majority
from annotator.train.data import (
    Encoder,
    LabeledItem,
    encode_pieces,
    neutral_token,
    read_labeled,
    split_items,
    training_examples,
    validation_examples,
)
from annotator.train.loss import answer_loss, expected_score_loss, soft_cross_entropy
from annotator.train.targets import Choices, Targets, balanced_weights


def items(n: int = 40) -> list[LabeledItem]:
    return [
        LabeledItem(
            r["id"],
            "f.csv",
            i + 1,
            {"title": r["title"], "text": r["text"]},
            {"sentiment": r["sentiment"], "quality": r["quality"]},
        )
        for i, r in enumerate(smoke_rows(n))
    ]


# -- reading ---------------------------------------------------------------------------------


def test_several_files_are_read_and_bad_rows_skipped_with_reasons(tmp_path):
    rubric = smoke_rubric()
    rows = smoke_rows(6)
    rows[1]["sentiment"] = "furious"  # not an allowed value
    rows[2]["quality"] = ""  # unlabelled
    first = write_labeled(tmp_path / "a.csv", rows)
    other = {**rows[3], "text": "other text"}  # a repeated id must repeat the inputs
    second = write_labeled(tmp_path / "b.csv", [*smoke_rows(3, seed=2, prefix="s"), rows[0], other])
    data = read_labeled(DataArgs(paths=[first, second], rubric=tmp_path / "r.toml"), rubric)
    assert [i.id for i in data.items] == ["r0", "r3", "r4", "r5", "s0", "s1", "s2"]
    reasons = {(name, s.id): s.reason for name, s in data.skipped}
    assert "is not one of" in reasons[("a.csv", "r1")]
    assert "empty" in reasons[("a.csv", "r2")]
    assert "duplicate id with other inputs (first in a.csv row 4)" == reasons[("b.csv", "r3")]
    assert data.items[0].ratings == 2  # r0 again in b.csv: a second rating of the same item
    assert data.items[0].labels == {
        "sentiment": rows[0]["sentiment"],
        "quality": rows[0]["quality"],
    }
    assert len(data.sha256) == 2


def test_several_files_need_ids(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "id"} for r in smoke_rows(3)]
    a, b = write_labeled(tmp_path / "a.csv", rows), write_labeled(tmp_path / "b.csv", rows)
    with pytest.raises(AnnotatorError, match="no id column"):
        read_labeled(DataArgs(paths=[a, b], rubric=tmp_path / "r.toml"), smoke_rubric())
    # one file without ids: row numbers, as `annotate` does
    data = read_labeled(DataArgs(paths=[a], rubric=tmp_path / "r.toml"), smoke_rubric())
    assert [i.id for i in data.items] == ["1", "2", "3"]


# -- the split -------------------------------------------------------------------------------


def test_split_is_by_item_disjoint_seeded_and_recorded():
    pool = items(50)
    # the same text under another id must stay on the same side as its twin
    twin = LabeledItem("twin", "f.csv", 99, dict(pool[0].fields), dict(pool[0].labels))
    pool.append(twin)
    split = split_items(pool, 0.2, seed=3407)
    train_ids = {i.id for i in split.train}
    val_ids = {i.id for i in split.validation}
    assert train_ids.isdisjoint(val_ids) and len(train_ids | val_ids) == len(pool)
    train_texts = {tuple(sorted(i.fields.items())) for i in split.train}
    assert not any(tuple(sorted(i.fields.items())) in train_texts for i in split.validation)
    assert ("r0" in val_ids) == ("twin" in val_ids)
    assert 9 <= len(val_ids) <= 12
    assert split.record["validation_ids"] == [i.id for i in split.validation]
    assert split.record["seed"] == 3407 and split.record["train_count"] == len(train_ids)
    again = split_items(pool, 0.2, seed=3407)
    assert [i.id for i in again.validation] == [i.id for i in split.validation]
    other = split_items(pool, 0.2, seed=1)
    assert [i.id for i in other.validation] != [i.id for i in split.validation]


def test_training_examples_come_only_from_training_items():
    tokenizer = gemma_tokenizer()
    rubric = smoke_rubric()
    split = split_items(items(30), 0.2, seed=7)
    encoder = Encoder(tokenizer, rubric, 512)
    texts = instruction_texts(rubric, AugmentArgs(), [])
    seen = set()
    for epoch in range(3):
        seen |= {
            e.item_id
            for e in training_examples(
                encoder, split.train, AugmentArgs(), texts, neutral_token(tokenizer), 7, epoch
            )
        }
    assert seen == {i.id for i in split.train}


# -- augmentation and dropout ------------------------------------------------------------------


def test_paraphrase_files_never_yield_an_empty_prompt(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("Label the review.\n---\nSay how the review feels\nand how well it reads.\n")
    assert read_paraphrases(good) == [
        "Label the review.",
        "Say how the review feels\nand how well it reads.",
    ]
    for text in ("One.\n---\n", "One.\n---\n\n---\nTwo.", "---\nOne."):
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(AnnotatorError, match="empty"):
            read_paraphrases(bad)
    texts = instruction_texts(smoke_rubric(), AugmentArgs(), read_paraphrases(good))
    assert texts[0] == smoke_rubric().instructions and all(t.strip() for t in texts)


def test_token_dropout_touches_only_prompt_tokens_at_the_intended_rate():
    kinds = (
        ["bos"]
        + ["prefix"] * 300
        + ["item"] * 100
        + ["cue"] * 3
        + ["answer"] * 2
        + ["cue"] * 3
        + ["answer"] * 3
    )
    ids = list(range(1000, 1000 + len(kinds)))
    rng = random.Random(0)
    hit = 0
    trials = 2000
    for _ in range(trials):
        out = token_dropout(ids, kinds, rate=0.03, share=0.5, neutral_id=0, rng=rng)
        changed = [i for i, (a, b) in enumerate(zip(ids, out, strict=True)) if a != b]
        if changed:
            hit += 1
            assert len(changed) == round(0.03 * 400)  # 3% of the 400 droppable tokens
            assert all(kinds[i] in DROPPABLE for i in changed)
            assert all(out[i] == 0 for i in changed)
    # share 0.5: binomial(2000, 0.5) has sd ~22; the paper's code hit ~69%
    assert abs(hit / trials - 0.5) < 0.05
    assert token_dropout(ids, kinds, 0.03, 0.0, 0, rng) == ids


def test_dropout_and_variants_never_reach_answers_or_validation():
    """With dropout on every example and a high rate, training prompts change everywhere
    but in BOS, cues and answers, and validation examples are the inference prompt exactly."""
    tokenizer = gemma_tokenizer()
    rubric = smoke_rubric()
    pool = items(12)
    encoder = Encoder(tokenizer, rubric, 512)
    heavy = AugmentArgs(token_dropout=0.5, token_dropout_share=1.0)
    texts = instruction_texts(rubric, heavy, ["Paraphrased: label the review."])
    neutral = neutral_token(tokenizer)
    # the pad token itself (Gemma's happens to be id 0), not whatever token has id 0
    assert neutral == tokenizer.pad_token_id and tokenizer.convert_ids_to_tokens(neutral) == "<pad>"
    trained = {e.item_id: e for e in training_examples(encoder, pool, heavy, texts, neutral, 3, 0)}
    for item in pool:
        example = trained[item.id]
        answers = [
            t
            for t, k in zip(example.ids, example.kinds, strict=True)
            if k in ("answer", "cue", "bos")
        ]
        clean = encoder.example(item)
        assert answers == [
            t for t, k in zip(clean.ids, clean.kinds, strict=True) if k in ("answer", "cue", "bos")
        ]
        assert example.ids.count(neutral) > 10
    for example, item in zip(validation_examples(encoder, pool), pool, strict=True):
        pieces = prompt.segments(rubric, item.fields, answers=item.labels)
        ids, kinds = encode_pieces(tokenizer, pieces, [tokenizer.bos_token_id])
        assert example.ids == ids and example.kinds == kinds
        assert neutral not in ids[1:]


def test_variants_vary_instructions_order_and_nominal_values_only():
    tokenizer = gemma_tokenizer()
    rubric = smoke_rubric()
    encoder = Encoder(tokenizer, rubric, 512)
    args = AugmentArgs(token_dropout=0.0)
    texts = instruction_texts(rubric, args, [])
    decoded = [
        tokenizer.decode(e.ids)
        for e in training_examples(encoder, items(40), args, texts, 0, 11, 0)
    ]
    assert any("Task: " in d for d in decoded) and any(
        d.index("### REVIEW") < d.index("### TITLE") for d in decoded
    )
    assert any("Allowed values: negative" in d for d in decoded)
    assert all("Allowed values: 1, 2, 3" in d for d in decoded)  # ordinal: order kept
    off = AugmentArgs(
        templates=False, reorder_inputs=False, shuffle_values=False, token_dropout=0.0
    )
    plain = training_examples(encoder, items(10), off, instruction_texts(rubric, off, []), 0, 11, 0)
    for example in plain:
        item = next(i for i in items(10) if i.id == example.item_id)
        assert example.ids == encoder.example(item).ids


# -- the loss ----------------------------------------------------------------------------------


class _Recorder(torch.nn.Module):
    """A stand-in model: zero logits, and a record of what it was asked for."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, input_ids, attention_mask, logits_to_keep, use_cache):
        self.calls.append((input_ids, logits_to_keep))
        logits = torch.zeros(input_ids.shape[0], len(logits_to_keep), self.vocab) + self.weight

        class Out:
            pass

        out = Out()
        out.logits = logits
        return out


def test_loss_is_taken_on_answer_tokens_only():
    tokenizer = gemma_tokenizer()
    rubric = smoke_rubric()
    encoder = Encoder(tokenizer, rubric, 512)
    examples = [encoder.example(i) for i in items(3)]
    model = _Recorder(len(tokenizer))
    loss, count = answer_loss(model, examples, tokenizer.pad_token_id, "cpu")
    assert count == sum(sum(e.answer_mask) for e in examples)
    # uniform logits: each answer token costs log(vocab) and nothing else is counted
    assert loss.item() == pytest.approx(
        count * torch.log(torch.tensor(float(len(tokenizer)))).item(), rel=1e-5
    )
    kept = model.calls[0][1].tolist()
    for e in examples:
        answer_positions = [p for p, a in enumerate(e.answer_mask) if a]
        assert all(p - 1 in kept for p in answer_positions)


class _Random(_Recorder):
    """A stand-in model: fixed random logits (seeded), so losses differ by target."""

    def forward(self, input_ids, attention_mask, logits_to_keep, use_cache):
        self.calls.append((input_ids, logits_to_keep))
        g = torch.Generator().manual_seed(7)
        shape = (input_ids.shape[0], len(logits_to_keep), self.vocab)
        logits = 3 * torch.randn(shape, generator=g) + self.weight

        class Out:
            pass

        out = Out()
        out.logits = logits
        return out


def test_one_hot_targets_give_exactly_the_old_cross_entropy():
    tokenizer = gemma_tokenizer()
    rubric = smoke_rubric()
    plain = [Encoder(tokenizer, rubric, 512).example(i) for i in items(3)]
    targets = Targets(tokenizer, rubric, Choices(soft=False, loss="ce", class_weights=None))
    built = [Encoder(tokenizer, rubric, 512, targets).example(i) for i in items(3)]
    assert any(e.soft for e in built)  # the decision tokens got explicit one-hot targets
    model = _Random(len(tokenizer))
    loss, count = answer_loss(model, built, tokenizer.pad_token_id, "cpu")
    again, _ = answer_loss(model, plain, tokenizer.pad_token_id, "cpu")
    # the old loss: full-vocabulary cross-entropy on each answer token
    logits = model(torch.zeros(3, 1), None, model.calls[0][1], False).logits  # same draw
    rows, cols, wanted = [], [], []
    keep = model.calls[0][1].tolist()
    for row, e in enumerate(plain):
        for p in (p for p, a in enumerate(e.answer_mask) if a and p > 0):
            rows.append(row)
            cols.append(keep.index(p - 1))
            wanted.append(e.ids[p])
    old = torch.nn.functional.cross_entropy(
        logits[rows, cols], torch.tensor(wanted), reduction="sum"
    )
    assert count == len(wanted)
    assert loss.item() == pytest.approx(old.item(), rel=1e-5)  # float32 sum order
    assert again.item() == pytest.approx(old.item(), rel=1e-5)


def test_soft_cross_entropy_against_a_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    one_hot = soft_cross_entropy(logits, torch.tensor([0]), torch.tensor([1]), torch.ones(1))
    assert one_hot.item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[:1], torch.tensor([1]), reduction="sum").item()
    )
    # row 0 towards (2/3, 1/3, 0): -(2/3 log .5 + 1/3 log .25)
    soft = soft_cross_entropy(
        logits, torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([2 / 3, 1 / 3])
    )
    assert soft.item() == pytest.approx(-(2 / 3 * math.log(0.5) + 1 / 3 * math.log(0.25)))


def test_expected_score_loss_value_and_gradient_sign():
    children = torch.zeros(3, requires_grad=True)  # uniform over three values
    positions = torch.tensor([0.0, 0.5, 1.0])
    loss = expected_score_loss(children, positions, target=1.0)  # raters all at the top
    assert loss.item() == pytest.approx(0.25)  # (0.5 - 1)^2
    loss.backward()
    # raising the top value's logit lowers the loss, raising the bottom one's raises it
    assert children.grad[2] < 0 < children.grad[0]
    assert children.grad[1] == pytest.approx(0.0, abs=1e-7)  # d/dz_k = 2(e-t) p_k (x_k - e)


def test_soft_targets_follow_the_raters_and_expected_terms_are_built():
    tokenizer = gemma_tokenizer()
    rubric = smoke_rubric()
    item = items(1)[0]
    rated = LabeledItem(
        item.id,
        item.source,
        item.row,
        item.fields,
        {"sentiment": "mixed", "quality": 3},
        {"sentiment": {"mixed": 2 / 3, "positive": 1 / 3}, "quality": {3: 2 / 3, 1: 1 / 3}},
        3,
    )
    targets = Targets(tokenizer, rubric, Choices(soft=True, loss="both", class_weights=None))
    example = Encoder(tokenizer, rubric, 512, targets).example(rated)
    spread = [sorted(w for _, w in dist) for dist in example.soft.values() if len(dist) > 1]
    assert spread == [pytest.approx([1 / 3, 2 / 3])] * 2  # one decision per dimension
    [(position, children, places, mean)] = example.expected  # quality only (ordinal)
    assert example.kinds[position] == "answer" and len(children) == 3
    assert sorted(places) == [0.0, 0.5, 1.0] and mean == pytest.approx(2 / 3)
    asked = Choices(soft=True, loss="ce", class_weights={})  # balanced, no nominal dimension
    assert Targets(tokenizer, rubric, asked).record()["class_weights"] == "balanced"


def test_balanced_class_weights_scale_the_rare_values_loss_up():
    tokenizer = gemma_tokenizer()
    rubric = smoke_rubric()
    pool = items(12)
    rare = next(
        v
        for v in ("positive", "negative", "mixed")
        if 0 < sum(i.labels["sentiment"] == v for i in pool) <= 3
    )
    weights = balanced_weights(rubric, pool)["sentiment"]
    common = max(weights, key=lambda v: -weights[v])
    assert weights[rare] > 1 > weights[common]
    choices = Choices(soft=False, loss="ce", class_weights={"sentiment": weights})
    targets = Targets(tokenizer, rubric, choices)
    model = _Random(len(tokenizer))
    for value in (rare, common):
        item = next(i for i in pool if i.labels["sentiment"] == value)
        plain = Encoder(tokenizer, rubric, 512).example(item)
        weighted = Encoder(tokenizer, rubric, 512, targets).example(item)
        sentiment = [p for p, ws in weighted.soft.items() if all(w != 1.0 for _, w in ws)]
        assert sentiment and all(
            sum(w for _, w in weighted.soft[p]) == pytest.approx(weights[value]) for p in sentiment
        )
        a, _ = answer_loss(model, [weighted], tokenizer.pad_token_id, "cpu")
        b, _ = answer_loss(model, [plain], tokenizer.pad_token_id, "cpu")
        assert (a > b) if value == rare else (a < b)


# -- several ratings per item ----------------------------------------------------------------


def test_repeated_ids_become_one_item_with_the_raters_distribution(tmp_path):
    rows = smoke_rows(4)
    ratings = [
        {**rows[0], "rater": "ann", "sentiment": "mixed", "quality": 3},
        {**rows[0], "rater": "bob", "sentiment": "negative", "quality": 1},
        {**rows[0], "rater": "cy", "sentiment": "negative", "quality": 3},
        {**rows[0], "rater": "cy", "sentiment": "positive", "quality": 2},  # cy again
        *({**r, "rater": "ann"} for r in rows[1:]),
    ]
    path = write_labeled(tmp_path / "a.csv", ratings)
    args = DataArgs(paths=[path], rubric=tmp_path / "r.toml", rater_col="rater")
    data = read_labeled(args, smoke_rubric())
    assert [i.id for i in data.items] == ["r0", "r1", "r2", "r3"]  # one example per item
    rated = data.items[0]
    assert rated.ratings == 3
    assert rated.targets["sentiment"] == {"negative": 2 / 3, "mixed": 1 / 3}
    assert rated.targets["quality"] == {1: 1 / 3, 3: 2 / 3}
    assert rated.labels == {"sentiment": "negative", "quality": 3}  # the majority
    assert [s.reason for _, s in data.skipped] == ["a second rating by the same rater"]
    single = data.items[1]  # one rating: a one-hot target, as before
    assert single.targets == {} and single.target("quality") == {rows[1]["quality"]: 1.0}


def test_the_split_never_separates_an_items_raters(tmp_path):
    rows = smoke_rows(10)
    path = write_labeled(tmp_path / "a.csv", rows + rows + rows)  # three raters, same ids
    data = read_labeled(DataArgs(paths=[path], rubric=tmp_path / "r.toml"), smoke_rubric())
    assert len(data.items) == 10 and {i.ratings for i in data.items} == {3}
    split = split_items(data.items, 0.3, seed=1)
    assert {i.id for i in split.train}.isdisjoint(i.id for i in split.validation)
    assert len(split.train) + len(split.validation) == 10


def test_majority_ties_go_to_the_value_listed_first():
    rubric = smoke_rubric()
    targets = distribution(rubric, [{"quality": 3}, {"quality": 1}, {"sentiment": "mixed"}])
    assert targets == {"sentiment": {"mixed": 1.0}, "quality": {1: 0.5, 3: 0.5}}
    assert majority(rubric, targets) == {"sentiment": "mixed", "quality": 1}


def test_a_projects_reviews_become_items_with_each_reviewers_rating(tmp_path):
    from annotator.data import Item
    from annotator.project.store import Store
    from annotator.rubric import rubric_from_dict

    rubric = smoke_rubric()
    project = tmp_path / "p.db"
    rows = smoke_rows(4)
    with Store(project) as store:
        store.bind_rubric(rubric)
        store.add_items(
            [Item(r["id"], n, {"title": r["title"], "text": r["text"]}) for n, r in enumerate(rows)]
        )
        store.save_reviews("ana", "import", [("r0", "sentiment", "mixed"), ("r0", "quality", 1)])
        store.save_reviews("ben", "import", [("r0", "sentiment", "mixed"), ("r0", "quality", 3)])
        store.save_reviews("cho", "import", [("r0", "sentiment", "negative")])  # no quality
        store.save_reviews("ana", "import", [("r1", "sentiment", "positive"), ("r1", "quality", 2)])
        store.save_reviews("ana", "import", [("r2", "sentiment", "positive")])  # quality unrated
    data = read_labeled(DataArgs(paths=[], rubric=tmp_path / "r.toml", project=project), rubric)
    assert [i.id for i in data.items] == ["r0", "r1"]
    r0 = data.items[0]
    assert r0.ratings == 3 and r0.fields == {"title": rows[0]["title"], "text": rows[0]["text"]}
    assert r0.targets["sentiment"] == {"negative": 1 / 3, "mixed": 2 / 3}
    assert r0.targets["quality"] == {1: 0.5, 3: 0.5}  # cho left out of quality
    assert data.items[1].targets == {}  # one reviewer: one-hot, as a labelled file
    assert [(s.id, s.reason) for _, s in data.skipped] == [("r2", "quality: not reviewed")]
    other = rubric_from_dict({**SMOKE_RUBRIC, "name": "other"}, "other")
    with pytest.raises(AnnotatorError, match=r"p\.db: the project's rubric is not --rubric's"):
        read_labeled(DataArgs(paths=[], rubric=tmp_path / "r.toml", project=project), other)
    with pytest.raises(AnnotatorError, match=r"nope\.db: no such project file"):
        read_labeled(
            DataArgs(paths=[], rubric=tmp_path / "r.toml", project=tmp_path / "nope.db"), rubric
        )


def test_the_target_choices_travel_into_the_files_provenance():
    from annotator.export.metadata import shipped_provenance
    from annotator.provenance import summary_lines

    record = {
        "targets": {"target": "soft", "ordinal_interval_loss": "both", "class_weights": "none"},
        "settings": {"data": {"paths": [], "project": "/home/ana/projects/team.db"}},
    }
    shipped = shipped_provenance(record)
    assert shipped["targets"] == record["targets"]
    assert shipped["settings"]["data"]["project"] == "team.db"  # no training-machine path
    lines = dict(summary_lines(shipped))
    assert lines["targets"] == "soft; ordinal/interval loss both; nominal class weights none"
