"""Train tests, part 6: choosing the checkpoint on what is shipped (issue 22 item 2).

Each validation fits a calibration head on the validation items' hidden states (as
`annotator calibrate` does) and reports its out-of-fold alpha and the share of the commonest
label; the kept adapter is the best by that, training stops after --patience validations
without a better one, the curve is written to the run directory, and a run whose kept adapter
gives one value to every validation item is not reported as a success. Real runs on the tiny
two-layer Gemma 3 (tests/helpers/train.py), on CPU.
"""

from __future__ import annotations  # noqa: I001  (`import train` must precede torch)

import json
import math

import annotator.train  # noqa: F401  (first, before torch: OpenMP wait policy and hub settings)

import pytest
import torch
from helpers.train import SMOKE_TOML, smoke_rows, tiny_dir, write_labeled

from annotator.errors import AnnotatorError
from annotator.train import curve
from annotator.train.validate import Evaluation

COMMON = ["--batch-size", "4", "--micro-batch-size", "4", "--warmup", "0", "--lora-r", "4"]
COMMON += ["--lora-alpha", "8", "--eval-every", "1"]


def _args(workdir, out: str, *more: str):
    """FinetuneArgs from `annotator train` options, as the command builds them."""
    from annotator.train.cli import finetune_args, train_command

    argv = ["--base", str(tiny_dir()), "--rubric", str(workdir / "rubric.toml")]
    argv += ["--out", str(workdir / out), *COMMON, *more]
    params = train_command.make_context("train", argv).params
    params.pop("calibrate")  # the step after training (export.calibrated), not the loop's
    return finetune_args(**params)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("train-select")
    (path / "rubric.toml").write_text(SMOKE_TOML)
    write_labeled(path / "many.csv", smoke_rows(60, seed=3, prefix="m"))
    write_labeled(path / "few.csv", smoke_rows(24, seed=1, prefix="f"))
    write_labeled(path / "a.csv", smoke_rows(16, seed=1, prefix="a"))  # test_train_cli's data
    write_labeled(path / "b.csv", smoke_rows(8, seed=2, prefix="b"))
    return path


@pytest.fixture(scope="module")
def selected(workdir):
    """24 validation items (a head needs 20), a validation after each of 4 steps."""
    from annotator.train.finetune import main

    args = _args(workdir, "run", "--data", str(workdir / "many.csv"), "--val-fraction", "0.4")
    args.train.max_steps, args.train.lr, args.eval.patience = 4, 0.002, 0
    return main(args)


@pytest.mark.long
def test_the_curve_holds_head_alpha_and_the_commonest_share(selected):
    run_dir = selected.run_dir
    record = json.loads((run_dir / "curve.json").read_text())
    evaluations = record["evaluations"]
    assert [e["step"] for e in evaluations] == [0, 1, 2, 3, 4]
    assert record["patience"] == 0 and record["stopped_early"] is False
    for e in evaluations:
        assert e["n"] == 24
        for dim in ("sentiment", "quality"):
            # 24 items with three values each: calibrate would fit a head, so alpha is a number
            assert isinstance(e["head_alpha"][dim], float), (e["step"], dim)
            assert -1 <= e["head_alpha"][dim] <= 1
            assert 1 / 3 <= e["share"][dim] <= 1 and 1 / 3 <= e["head_share"][dim] <= 1
        assert e["mean_head_alpha"] == pytest.approx(sum(e["head_alpha"].values()) / 2)
    assert sum(e["kept"] for e in evaluations) == 1
    text = (run_dir / "curve.md").read_text()
    assert f"Kept: step {record['kept_step']}" in text
    assert sum(line.startswith("| ") for line in text.splitlines()) == 1 + 5  # header, rows
    lines = curve.table(selected.history, selected.best)
    assert max(len(line) for line in lines) <= 80
    assert sum(line.endswith("kept") for line in lines) == 1
    log = (run_dir / "train.log").read_text()
    assert "head alpha sentiment" in log and "early stopping off" in log


@pytest.mark.long
def test_the_kept_adapter_is_the_best_by_head_alpha(selected, workdir):
    """The kept step ranks first by (not collapsed, mean head alpha, mean argmax alpha,
    -loss) among the trained evaluations, and the merged model is that checkpoint: scored
    again, it gives exactly the kept evaluation's answers' alpha."""
    from transformers import AutoModelForCausalLM

    from annotator.rubric import load_rubric
    from annotator.train.base import load_tokenizer
    from annotator.train.data import LabeledItem
    from annotator.train.scoring import score_and_read
    from annotator.train.validate import evaluation

    run_dir = selected.run_dir
    evaluations = json.loads((run_dir / "curve.json").read_text())["evaluations"]

    def rank(e):
        lowest = -math.inf
        head, argmax = e["mean_head_alpha"], e["mean_alpha"]
        return (not e["collapsed"], lowest if head is None else head,
                lowest if argmax is None else argmax, -e["val_loss"])  # fmt: skip

    trained = [e for e in evaluations if e["step"] > 0]
    best = max(trained, key=rank)
    assert next(e["step"] for e in trained if rank(e) == rank(best)) == selected.best.step
    assert next(e for e in evaluations if e["kept"])["step"] == selected.best.step
    prov = json.loads((run_dir / "merged" / "annotator_provenance.json").read_text())
    assert prov["settings"]["best_step"] == selected.best.step
    assert prov["validation_head_alpha"] == selected.best.head_alpha

    rubric = load_rubric(workdir / "rubric.toml")
    rows = [json.loads(line) for line in (run_dir / "validation.jsonl").read_text().splitlines()]
    items = [
        LabeledItem(r["id"], "v", n, {"title": r["title"], "text": r["text"]},
                    {"sentiment": r["sentiment"], "quality": r["quality"]})
        for n, r in enumerate(rows)
    ]  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(run_dir / "merged", dtype=torch.float32)
    scored = score_and_read(
        model, load_tokenizer(run_dir / "merged"), rubric, [i.fields for i in items]
    )
    again = evaluation(rubric, items, scored, 0, 0.0, 0.0)
    assert again.alpha == selected.best.alpha
    assert again.share == selected.best.share


def test_selection_ranks_collapse_then_head_alpha_then_answer_alpha():
    def made(head, argmax, loss=1.0, collapsed=None):
        dims = ("a", "b")
        return Evaluation(
            1, 1.0, loss, dict(zip(dims, argmax, strict=True)), {}, 30,
            head_alpha=dict(zip(dims, head, strict=True)), collapsed=collapsed or {},
        )  # fmt: skip

    plain = made((0.2, 0.2), (0.0, 0.0))
    assert made((0.3, 0.2), (-0.5, -0.5)).key() > plain.key()  # head alpha first
    assert made((0.2, 0.2), (0.1, 0.0)).key() > plain.key()  # then argmax alpha
    assert made((0.2, 0.2), (0.0, 0.0), loss=0.5).key() > plain.key()  # then loss
    assert made((None, None), (0.9, 0.9)).key() < plain.key()  # undefined ranks lowest
    assert made((0.2, None), (0.0, 0.0)).key() == plain.key()  # means over defined dims
    assert made((0.9, 0.9), (0.9, 0.9), collapsed={"a": ["argmax"]}).key() < plain.key()
    assert not made((0.2, 0.2), (0.0, 0.0)).key() > plain.key()  # a tie keeps the earlier


@pytest.mark.long
def test_patience_stops_training(workdir):
    """With a learning rate of 0 no validation is better than the first after training:
    --patience 2 stops two validations later, and the log and the curve say so."""
    from annotator.train.finetune import main

    args = _args(workdir, "patient", "--data", str(workdir / "few.csv"), "--patience", "2")
    args.train.lr, args.train.max_steps, args.eval.before = 0.0, 10, False
    outcome = main(args)
    assert outcome.steps == 3 and outcome.stopped_early and outcome.best.step == 1
    record = json.loads((outcome.run_dir / "curve.json").read_text())
    assert [e["step"] for e in record["evaluations"]] == [1, 2, 3]
    assert record["stopped_early"] is True and record["kept_step"] == 1
    log = (outcome.run_dir / "train.log").read_text()
    assert "stopping early at step 3: no better validation in 2 evaluations" in log
    assert "Training stopped early" in (outcome.run_dir / "curve.md").read_text()


@pytest.mark.long
def test_a_collapsed_run_is_not_called_a_success(workdir, capsys):
    """A learning rate 400 times the recipe's drives the tiny model to one answer on a
    dimension for each of the 24 validation items after every step, where the human labels
    have three values: the summary names it, and the command ends with an error (exit status
    1), the files kept."""
    from annotator.train.cli import main

    argv = ["--base", str(tiny_dir()), "--rubric", str(workdir / "rubric.toml")]
    argv += ["--data", str(workdir / "many.csv"), "--val-fraction", "0.4"]
    argv += ["--out", str(workdir / "collapsed"), *COMMON, "--lr", "0.02", "--max-steps", "2"]
    with pytest.raises(AnnotatorError, match="training collapsed: the kept checkpoint") as error:
        main(argv)
    run_dir = workdir / "collapsed"
    record = json.loads((run_dir / "curve.json").read_text())
    assert all(e["collapsed"] for e in record["evaluations"] if e["step"] > 0)
    kept = next(e for e in record["evaluations"] if e["kept"])
    assert record["collapsed"] == kept["collapsed"] and kept["n"] == 24
    named = curve.collapsed_text(kept["collapsed"])
    assert f" on {named} where" in str(error.value)
    out = capsys.readouterr().out
    assert f"COLLAPSED: {named}: one value for every validation item" in out
    assert "validation curve" in out
    rows = [json.loads(line) for line in (run_dir / "validation.jsonl").open()]
    for dim, how in kept["collapsed"].items():
        assert len({r[dim] for r in rows}) >= 2
        assert "argmax" not in how or kept["share"][dim] == 1.0
    assert (run_dir / "merged" / "model.safetensors").is_file()


def test_too_few_validation_items_to_call_a_collapse():
    """One answer for all of five items (humans: two values) is reported, not called a
    collapse: that needs as many items as a head (MIN_ITEMS)."""
    from helpers.train import smoke_rubric

    from annotator.calibration.heads import MIN_ITEMS
    from annotator.rubric import load_rubric  # noqa: F401
    from annotator.train.data import LabeledItem
    from annotator.train.scoring import Scored
    from annotator.train.validate import evaluation

    rubric = smoke_rubric()
    for n in (5, MIN_ITEMS):
        items = [
            LabeledItem(f"i{k}", "v", k, {}, {"sentiment": "mixed", "quality": 1 + k % 2})
            for k in range(n)
        ]
        answers = [{"sentiment": ("mixed", 1.0, 1.0), "quality": (1, 1.0, 1.0)}] * n
        probs = [{"sentiment": [0, 0, 1.0], "quality": [1.0, 0, 0]}] * n
        found = evaluation(rubric, items, Scored(answers, probs, None), 1, 1.0, 1.0)
        assert found.share == {"sentiment": 1.0, "quality": 1.0}
        # sentiment: the humans gave one value too, so one answer is no collapse
        assert found.collapsed == ({} if n < MIN_ITEMS else {"quality": ["argmax"]})
        lines = curve.table([found], found)
        assert any("too few" in line for line in lines) == (n < MIN_ITEMS)
