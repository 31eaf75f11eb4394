"""One rubric dimension's allowed values, picked with number keys or arrows.

Values are numbered from 1 in the rubric's order ("0" is the tenth). Two digits typed within
a second pick values past nine ("1" then "2" is the twelfth), so a 28-value nominal scale is
reachable without the arrows. The picker never shows the model's answer: review is blind.

A multi-label dimension's picker toggles values: a number key (or space, on the value the
arrows moved to) turns a value on or off, within the dimension's max; its answer is the set
of values on, once one was toggled (so an empty set is an answer only when chosen) and when it
has at least the dimension's min.
"""

from __future__ import annotations

import time

from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from annotator.multilabel import shown
from annotator.rubric import Dimension, Value

TWO_DIGIT_WINDOW = 1.0  # seconds between the digits of a two-digit pick


class ValuePicker(Widget):
    """Not focusable: the review view keeps the focus and sends keys to the active picker.

    Keys are queued per widget in Textual, so moving the focus between pickers let keys typed
    ahead ("4 tab 5") land on the picker being left; one focused view keeps them in order.
    """

    DEFAULT_CSS = """
    ValuePicker { height: auto; padding: 0 1; border-left: blank; }
    ValuePicker.-active { border-left: thick $accent; background: $boost; }
    ValuePicker.-locked { opacity: 70%; }
    """

    selected: reactive[int | None] = reactive(None)
    locked: reactive[bool] = reactive(False)  # after saving, until the next item
    active: reactive[bool] = reactive(False, layout=True)  # receives the review's keys

    class Picked(Message):
        def __init__(self, picker: ValuePicker) -> None:
            super().__init__()
            self.picker = picker

    def __init__(self, dimension: Dimension, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dimension = dimension
        self._digit: int | None = None
        self._digit_at = 0.0
        self._positions: list[tuple[int, int]] = []  # (line, column) of each value, as drawn
        self.chosen: set[int] = set()  # multi-label: the values turned on
        self._touched = False  # multi-label: a value was toggled since the reset
        anchors = dict(dimension.anchors)
        self._labels = []
        for i, v in enumerate(dimension.values):
            # The key to press, then the value, unless they are the same (scores 1..n).
            label = str(v) if str(v) == str(i + 1) else f"{i + 1} {v}"
            self._labels.append(label + (f" ({anchors[str(v)]})" if str(v) in anchors else ""))

    @property
    def value(self) -> Value | None:
        dim = self.dimension
        if dim.multi:
            if not self._touched or len(self.chosen) < dim.min_count:
                return None
            return tuple(str(v) for i, v in enumerate(dim.values) if i in self.chosen)
        return None if self.selected is None else dim.values[self.selected]

    @property
    def value_text(self) -> str:
        """The answer as shown: a set's values joined by ";" ("none" for the empty set)."""
        return shown(self.value) if self.value is not None else "None"

    def reset(self) -> None:
        self.selected = None
        self.locked = False
        self._digit = None
        self.chosen = set()
        self._touched = False

    def pick(self, index: int) -> None:
        if self.locked or not 0 <= index < len(self.dimension.values):
            return
        if self.dimension.multi:
            self._toggle(index)
            return
        self.selected = index
        self.post_message(self.Picked(self))

    def _toggle(self, index: int) -> None:
        dim = self.dimension
        self.selected = index  # where the arrows go on from
        if index in self.chosen:
            self.chosen.discard(index)
        elif dim.max_count is None or len(self.chosen) < dim.max_count:
            self.chosen.add(index)
        else:
            self.app.bell()  # at the dimension's max: turn one off first
            return
        self._touched = True
        self.refresh()
        self.post_message(self.Picked(self))

    def action_toggle(self, _: int = 0) -> None:
        """Space: toggle the value the arrows are on (multi-label)."""
        if self.dimension.multi and self.selected is not None:
            self.pick(self.selected)

    def _go(self, index: int) -> None:
        """Arrows: pick the value, or on a multi-label dimension only move to it."""
        if self.dimension.multi and not self.locked:
            self.selected = index
        else:
            self.pick(index)

    def action_move(self, step: int) -> None:
        count = len(self.dimension.values)
        start = (-1 if step > 0 else count) if self.selected is None else self.selected
        self._go((start + step) % count)

    def action_move_row(self, step: int) -> None:
        """Up/down to the value drawn nearest above or below; from none picked, like left/right."""
        if self.selected is None or not self._positions:
            self.action_move(step)
            return
        line, column = self._positions[self.selected]
        below = [
            (abs(c - column), i) for i, (ln, c) in enumerate(self._positions) if ln == line + step
        ]
        if below:
            self._go(min(below)[1])

    def action_move_to(self, index: int) -> None:
        self._go(index % len(self.dimension.values))

    def pick_digit_now(self, digit: int) -> None:
        self.pick_digit(digit, time.monotonic())

    def pick_digit(self, digit: int, now: float) -> None:
        count = len(self.dimension.values)
        if self._digit is not None and now - self._digit_at <= TWO_DIGIT_WINDOW:
            number = self._digit * 10 + digit
            if 1 <= number <= count:
                self._digit = None
                self.pick(number - 1)
                return
        number = 10 if digit == 0 else digit
        # A digit that could start a two-digit number waits for a second one, but picks now.
        self._digit, self._digit_at = (digit if 0 < digit * 10 <= count else None), now
        if number <= count:
            self.pick(number - 1)

    def watch_locked(self, locked: bool) -> None:
        self.set_class(locked, "-locked")

    def watch_active(self, active: bool) -> None:
        self.set_class(active, "-active")  # and render() shows its whole question

    def render(self) -> Content:
        dim = self.dimension
        width = max(1, self.content_size.width)
        question = f"  {dim.question}"
        if not self.active and len(dim.name) + len(question) > width:
            question = question[: max(0, width - len(dim.name) - 1)] + "…"
        lines: list[Content] = [
            Content.assemble((dim.name, "bold"), Content.styled(question, "$text-muted"))
        ]
        # Similar labels go in a grid (columns line up); uneven ones (anchors on a few values)
        # flow, so a 1-5 scale stays on one line. Up/down use the drawn positions either way.
        longest = max(map(len, self._labels))
        grid = longest <= 2 * max(4, sorted(map(len, self._labels))[len(self._labels) // 2])
        self._positions = []
        row: list[Content | tuple[str, str] | str] = []
        column = 0
        labels = self._labels
        if dim.multi:  # on or off before each value
            labels = [("[x] " if i in self.chosen else "[ ] ") + t for i, t in enumerate(labels)]
            longest += 4
        for index, label in enumerate(labels):
            cell = min(width, (longest if grid else len(label)) + 2)
            if column and column + cell > width:
                lines.append(Content.assemble(*row))
                row, column = [], 0
            text = label if len(label) < cell else label[: cell - 2] + "…"
            self._positions.append((len(lines), column))
            style = "reverse bold" if index == self.selected else ""
            if dim.multi and index != self.selected:
                style = "bold $text-accent" if index in self.chosen else ""
            row += [
                (text, style),
                " " * (cell - len(text)),
            ]
            column += cell
        lines.append(Content.assemble(*row))
        return Content("\n").join(lines)
