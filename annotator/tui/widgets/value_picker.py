"""One rubric dimension's allowed values, picked with number keys or arrows.

Values are numbered from 1 in the rubric's order ("0" is the tenth). Two digits typed within
a second pick values past nine ("1" then "2" is the twelfth), so a 28-value nominal scale is
reachable without the arrows. The picker never shows the model's answer: review is blind.
"""

from __future__ import annotations

import time

from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

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
        anchors = dict(dimension.anchors)
        self._labels = []
        for i, v in enumerate(dimension.values):
            # The key to press, then the value, unless they are the same (scores 1..n).
            label = str(v) if str(v) == str(i + 1) else f"{i + 1} {v}"
            self._labels.append(label + (f" ({anchors[str(v)]})" if str(v) in anchors else ""))

    @property
    def value(self) -> Value | None:
        return None if self.selected is None else self.dimension.values[self.selected]

    def reset(self) -> None:
        self.selected = None
        self.locked = False
        self._digit = None

    def pick(self, index: int) -> None:
        if self.locked or not 0 <= index < len(self.dimension.values):
            return
        self.selected = index
        self.post_message(self.Picked(self))

    def action_move(self, step: int) -> None:
        count = len(self.dimension.values)
        start = (-1 if step > 0 else count) if self.selected is None else self.selected
        self.pick((start + step) % count)

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
            self.pick(min(below)[1])

    def action_move_to(self, index: int) -> None:
        self.pick(index % len(self.dimension.values))

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
        for index, label in enumerate(self._labels):
            cell = min(width, (longest if grid else len(label)) + 2)
            if column and column + cell > width:
                lines.append(Content.assemble(*row))
                row, column = [], 0
            text = label if len(label) < cell else label[: cell - 2] + "…"
            self._positions.append((len(lines), column))
            row += [
                (text, "reverse bold" if index == self.selected else ""),
                " " * (cell - len(text)),
            ]
            column += cell
        lines.append(Content.assemble(*row))
        return Content("\n").join(lines)
