"""What the Review tab shows in words: the status line, the item's text, the message of an
empty queue, the model's answer before saving (not blind) and the reveal after saving.

Pure formatting: the view (`tui.widgets.review_view`) decides when each is shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from textual.content import Content

from annotator.multilabel import shown
from annotator.project.store import Label
from annotator.rubric import Rubric, Value
from annotator.tui import queues


def status_text(
    queue: str,
    reviewer: str | None,
    left: int,
    revealed: bool,
    blind: bool,
    sample: tuple[int, int],
) -> str:
    """`left`: items still to review; `sample`: (reviewed, size) of the audit sample."""
    if reviewer is None:
        return "reviewer not set (n)"
    state = "saved" if revealed else ("blind" if blind else "NOT blind (v)")
    if queue == queues.AUDIT:
        return (
            f"AUDIT sample: {sample[0]} of {sample[1]} reviewed · {left} left"
            f" · {reviewer} · {state}"
        )
    if queue == queues.TEACH:
        return f"TEACH the head (not in alpha) · {left} left · {reviewer} · {state}"
    return f"HARDEST FIRST (not in alpha) · {left} left · {reviewer} · {state}"


def empty_text(queue: str, sample: tuple[int, int]) -> str:
    """The message of an empty queue; `sample`: (reviewed, size) of the audit sample."""
    if queue == queues.AUDIT:
        return (
            f"The audit sample is done: {sample[0]} of {sample[1]} reviewed.\n"
            "z: a larger sample · t: the hardest-first queue"
        )
    if queue == queues.TEACH:
        return (
            "The teach batch is done (or nothing is left outside the audit sample). "
            "Calibrate (k on the Agreement tab), so the next batch is chosen by the new "
            "head; t: the audit sample "
            "(the next teach batch is chosen when you come back)."
        )
    return (
        "The hardest-first queue is empty: every annotated item outside the audit sample "
        "has your review (or nothing is annotated yet).\nt: the audit sample"
    )


def item_content(item_id: str, fields: Mapping[str, str] | None, rubric: Rubric | None) -> Content:
    """The item's id, then each input field under its label (`fields` None: id only)."""
    parts: list[Content] = [Content.styled(f"item {item_id}", "$text-muted")]
    if fields is not None and rubric is not None:
        for field in rubric.inputs:
            parts.append(Content.styled(field.label, "bold $text-accent"))
            parts.append(Content(fields.get(field.column, "").strip()))
    return Content("\n").join(parts)


def model_answer_content(labels: Mapping[str, Label]) -> Content:
    """Not blind (hardest-first and teach queues only): the model's answer before saving."""
    answers = ", ".join(
        f"{name} {shown(label.value)} (p {label.prob:.2f})" for name, label in labels.items()
    )
    return Content.styled(f"Not blind. Model: {answers or 'not annotated yet'}", "$text-warning")


def reveal_content(
    labels: Mapping[str, Label] | None, picks: Sequence[tuple[str, Value | None, str]]
) -> Content:
    """After saving: each dimension's pick next to the model's answer.

    `picks`: (dimension name, value picked, that value as shown) per dimension, in order.
    """
    lines = [Content.styled("Saved. The model's answers:", "bold")]
    for name, value, value_text in picks:
        label = (labels or {}).get(name)
        if label is None:
            lines.append(Content(f"  {name}: you {value_text} · model: not annotated yet"))
            continue
        same = label.value == value
        mark = (
            Content.styled(" same", "bold $text-success")
            if same
            else Content.styled(" differs", "bold $text-warning")
        )
        lines.append(
            Content.assemble(
                f"  {name}: you {value_text} · model {shown(label.value)} (p {label.prob:.2f})",
                mark,
            )
        )
    lines.append(Content.styled("enter: next item", "$text-muted"))
    return Content("\n").join(lines)
