"""The app's pieces without a terminal: review queues, value picking, launch defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotator.project.store import Label
from annotator.tui.launch import DEMO_PROJECT, resolve_launch
from annotator.tui.queues import (
    AUDIT,
    HARD,
    audit_order,
    audit_queue,
    hard_queue,
    my_reviewed_items,
)

IDS = [f"i{n:02d}" for n in range(30)]


def test_audit_sample_is_fixed_random_and_grows_by_adding():
    order = audit_order(IDS)
    assert order == audit_order(reversed(IDS))  # independent of the order items came in
    assert order != sorted(IDS)
    small, large = audit_queue(order, 5, set()), audit_queue(order, 12, set())
    assert large.sample[:5] == small.sample and len(large.sample) == 12


def test_audit_queue_counts_only_audit_reviews_as_done():
    order = audit_order(IDS)
    reviews = [
        (order[0], "d", "me", 1, AUDIT),
        (order[1], "d", "me", 1, HARD),
        (order[20], "d", "me", 1, HARD),
        (order[2], "d", "you", 1, AUDIT),
    ]
    queue = audit_queue(order, 5, my_reviewed_items(reviews, "me", AUDIT))
    # order[1] was reviewed in the hard queue (perhaps not blind): it is asked again, blind.
    assert queue.done == 1 and queue.todo == order[1:5]
    assert not hasattr(queue, "promote")  # nothing is re-filed from the hard queue


def test_hard_queue_is_least_sure_first_without_excluded_items():
    annotations = [
        (f"i{n}", {"d": Label("x", 0.9, margin), "e": Label("y", 0.8, 0.5)}, 0)
        for n, margin in enumerate([0.4, 0.1, 0.3, 0.1])
    ]
    assert hard_queue(annotations, exclude={"i2"}) == ["i1", "i3", "i0"]


def test_my_reviewed_items_only_mine():
    reviews = [
        ("a", "d", "me", 1, HARD),
        ("a", "e", "me", 1, AUDIT),
        ("b", "d", "you", 2, AUDIT),
        ("c", "d", "me", 1, HARD),
    ]
    assert my_reviewed_items(reviews, "me") == {"a", "c"}
    assert my_reviewed_items(reviews, "me", AUDIT) == {"a"}
    assert my_reviewed_items(reviews, "me", HARD) == {"a", "c"}


def test_launch_defaults():
    demo = resolve_launch()
    assert demo.demo and demo.project == DEMO_PROJECT and demo.data.name == "items.csv"
    assert demo.rubric.parent.name == "goemotions"
    assert demo.model is not None and demo.model.name == "goemotions-lora.gguf"  # fine-tuned
    given = resolve_launch("p.db", model="m.gguf")
    assert not given.demo and given.data is None and given.model == Path("m.gguf")


def test_value_picker_digits(goemotions_rubric):
    from annotator.tui.widgets.value_picker import ValuePicker

    picker = ValuePicker(goemotions_rubric.dimensions[0])
    picked = []
    picker.post_message = lambda message: picked.append(picker.selected)  # no app needed
    picker.pick_digit(3, now=0.0)
    picker.pick_digit(1, now=5.0)
    picker.pick_digit(8, now=5.5)  # "1" then "8" quickly: the 18th value
    picker.pick_digit(2, now=9.0)
    picker.pick_digit(9, now=9.2)  # 29 is past the end: "9" alone
    picker.pick_digit(0, now=20.0)  # "0" alone: the tenth
    assert picked == [2, 0, 17, 1, 8, 9]
    assert picker.value == "disappointment"


def test_confusion_counts_only_unbiased_reviews_and_draws_a_matrix_for_scores(newsroom_rubric):
    from annotator.tui.confusion import confusions
    from annotator.tui.widgets.confusion_view import confusion_lines

    dims = [d.name for d in newsroom_rubric.dimensions]
    model = [(f"i{n}", {d: Label(v, 0.5, 0.1) for d in dims}, 0) for n, v in enumerate([1, 2, 5])]
    reviews = [
        ("i0", dims[0], "me", 1, AUDIT),
        ("i1", dims[0], "me", 3, AUDIT),
        ("i2", dims[0], "me", 5, HARD),
        ("i2", dims[0], "you", 4, "import"),
    ]
    first = confusions(newsroom_rubric, model, reviews)[0]
    assert dict(first.pairs) == {(1, 1): 1, (2, 3): 1, (5, 4): 1} and first.agreed == 1
    lines = [str(line) for line in confusion_lines(first)]
    assert "1 of 3 the same" in lines[0]
    assert lines[1].split()[-5:] == ["1", "2", "3", "4", "5"]  # reviewer values across
    assert lines[3].split() == ["2", "·", "·", "1", "·", "·"]  # model 2, reviewer 3


def test_a_model_that_carries_its_rubric_needs_no_rubric_file(
    tmp_path, monkeypatch, goemotions_rubric
):
    """A new project from --data and a model whose GGUF metadata holds the rubric."""
    from dataclasses import replace

    from helpers.tui import sample_subset

    import annotator.tui.project as project_module
    from annotator.modelfile import default_model_path, read_model_info
    from annotator.tui.launch import Launch
    from annotator.tui.project import load_project

    real = read_model_info(default_model_path())
    monkeypatch.setattr(
        project_module, "read_model_info", lambda path: replace(real, rubric=goemotions_rubric)
    )
    data = sample_subset(tmp_path, 5)
    info = load_project(Launch(tmp_path / "p.db", data=data))
    assert info.errors == [] and info.rubric == goemotions_rubric and info.data_items == 5
    assert info.can_annotate
    # Without a rubric anywhere the problem is named, and no project file is left behind.
    monkeypatch.setattr(project_module, "read_model_info", lambda path: real)
    info = load_project(Launch(tmp_path / "q.db", data=data))
    assert "carries no rubric" in info.errors[0] and not (tmp_path / "q.db").exists()


def test_training_summary_reads_untrusted_provenance():
    from annotator.tui.formatting import training_summary

    good = {
        "split": {"train_count": 256, "validation_count": 64},
        "validation_alpha": {"emotion": 0.2858},
    }
    assert training_summary(good) == (
        "fine-tuned on 256 labelled items; alpha vs human labels "
        "on 64 held-out items: emotion 0.286"
    )
    assert training_summary(None) is None and training_summary({}) is None
    odd = {"split": "x", "validation_alpha": {"a\x1b[31m": "high", "b": True, "c": 0.5}}
    assert training_summary(odd) == "alpha vs human labels: c 0.500"


def test_the_app_runs_an_adapter_on_the_base_it_is_given(tmp_path):
    """`annotator tui --model ADAPTER --base BASE`: the base reaches the job; a base the
    adapter was not made for is refused with the job's one-line error."""
    from annotator.errors import AnnotatorError
    from annotator.modelfile import default_model_path
    from annotator.tui.annotation import AnnotationRunner
    from annotator.tui.launch import DEMO_MODEL, samples_dir

    sample = samples_dir() / "goemotions"
    launch = resolve_launch(
        tmp_path / "p.db",
        sample / "items.csv",
        model=sample / DEMO_MODEL,
        base=default_model_path(),
    )
    assert launch.base == default_model_path() and resolve_launch().base is None
    events = []
    runner = AnnotationRunner(launch.data, launch.project, None, launch.model, base=launch.base)
    finished = runner.run(events.append)
    assert finished.done_now == 40
    wrong = tmp_path / "not-the-base.gguf"
    wrong.write_bytes(sample.joinpath(DEMO_MODEL).read_bytes())  # a GGUF, but another sha256
    other = AnnotationRunner(launch.data, tmp_path / "q.db", None, launch.model, base=wrong)
    with pytest.raises(AnnotatorError, match="made for the base model"):
        other.run(events.append)
