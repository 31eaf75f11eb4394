"""Spot-check review: one item at a time, keyboard first, blind until saved.

The model's answer is not on screen (not even as a default pick) until the reviewer saves;
then it is revealed next to the reviewer's values. Every save is committed to the project
store before the screen moves on, so quitting or killing the app loses no saved review.
Queues (audit sample, hardest first, teach) are built by `tui.queues`; the words shown
(status, item text, reveal) by `tui.review_text`.
"""

from __future__ import annotations

import getpass
import os
import sqlite3
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Static

from annotator.errors import AnnotatorError
from annotator.multilabel import multi_labels
from annotator.project.reviews import check_reviewer
from annotator.project.store import Label
from annotator.tui import queues, review_text
from annotator.tui.focus import focus_now
from annotator.tui.screens.ask import AskScreen
from annotator.tui.widgets.value_picker import ValuePicker

if TYPE_CHECKING:
    from annotator.tui.app import AnnotatorApp


def default_reviewer() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:  # getpass raises various errors where no user name is known
        return ""


class ReviewView(Vertical, can_focus=True):
    DEFAULT_CSS = """
    ReviewView #review-status { height: 1; background: $panel; padding: 0 1; }
    ReviewView #review-text { height: 1fr; min-height: 3; padding: 0 1; }
    ReviewView #review-pickers { height: auto; max-height: 60%; }
    ReviewView #review-reveal { height: auto; display: none; padding: 0 1;
                                border-top: solid $accent; }
    ReviewView #review-reveal.-shown { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "save", "Save / next"),
        Binding("s", "skip", "Skip"),
        Binding("t", "switch_queue", "Queue"),
        Binding("z", "audit_size", "Sample size"),
        Binding("n", "ask_reviewer", "Reviewer", show=False),
        Binding("v", "toggle_blind", "Blind", show=False),
        Binding("left", "value('move', -1)", show=False),
        Binding("right", "value('move', 1)", show=False),
        Binding("up", "value('move_row', -1)", show=False),
        Binding("down", "value('move_row', 1)", show=False),
        Binding("home", "value('move_to', 0)", show=False),
        Binding("end", "value('move_to', -1)", show=False),
        Binding("space", "value('toggle', 0)", show=False),  # a multi-label value on or off
        Binding("tab", "dimension(1)", "Next dimension", show=False),
        Binding("shift+tab", "dimension(-1)", "Previous dimension", show=False),
        Binding("pageup", "scroll_text(-1)", show=False),
        Binding("pagedown", "scroll_text(1)", show=False),
    ]

    class Saved(Message):
        """A review was committed to the store."""

        def __init__(self, item_id: str, queue: str) -> None:
            super().__init__()
            self.item_id, self.queue = item_id, queue

    def __init__(self, reviewer: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reviewer = reviewer
        self.queue = queues.AUDIT
        self.audit_size: int | None = None
        self.todo: list[str] = []
        self.current: str | None = None
        self.revealed = False
        # Blind by default. Only the hardest-first and teach queues may show the model's answer
        # before saving: their reviews never count towards alpha, the audit sample's always do.
        self.blind = True
        self.sample_done = 0
        self.sample_size = 0
        self.skipped = 0
        self._model: dict[str, dict[str, Label]] = {}
        self._active = 0  # the dimension that number keys and arrows go to
        self._asking = False

    @property
    def annotator(self) -> AnnotatorApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static("", id="review-status", markup=False)
        text = VerticalScroll(Static("", id="review-item"), id="review-text")
        text.can_focus = False  # the view keeps the focus: its keys go to the pickers
        yield text
        pickers = VerticalScroll(id="review-pickers")
        pickers.can_focus = False  # scrolls to the active picker when there are many
        yield pickers
        yield Static("", id="review-reveal")

    # -- project lifecycle ------------------------------------------------------------------

    def reset_project(self) -> None:
        """A (new) project was opened: one picker per dimension, queues rebuilt on demand."""
        pickers = self.query_one("#review-pickers")
        pickers.remove_children()
        rubric = self.annotator.rubric
        if rubric is not None:
            pickers.mount_all(
                ValuePicker(dim, id=f"pick-{i}") for i, dim in enumerate(rubric.dimensions)
            )
        self.current, self.todo, self.revealed = None, [], False
        self._show_item()

    def activate(self) -> None:
        """The Review tab was opened: ask what is missing, then show an item."""
        if self.annotator.store is None or self.annotator.rubric is None:
            self._set_status("no project open (see the Project tab)")
            self._show_message("Nothing to review: the project could not be opened.")
            return
        if self._asking:
            return
        if self.reviewer is None:
            self.action_ask_reviewer()
            return
        if self.queue == queues.AUDIT and self.audit_size is None:
            self.action_audit_size()
            return
        if self.current is None:
            self._load_queue()
            self._next_item()
        self._focus_picker()

    # -- actions ----------------------------------------------------------------------------

    def action_ask_reviewer(self) -> None:
        self._asking = True
        self.app.push_screen(
            AskScreen(
                "Reviewer name",
                "Saved with every review you make.",
                self.reviewer or default_reviewer(),
                check_reviewer,
            ),
            self._got_reviewer,
        )

    def _got_reviewer(self, name: str | None) -> None:
        self._asking = False
        if name is None and self.reviewer is None:
            self._set_status("review needs a reviewer name: press n")
            self._show_message("Press n to give your name and start reviewing.")
            return
        if name is not None and name != self.reviewer:
            self.reviewer = name
            self.current = None  # queues depend on who reviews
        self.activate()

    def action_audit_size(self) -> None:
        store = self.annotator.store
        if store is None:
            return
        total = len(store.item_ids())
        if total == 0:
            self._show_message("The project has no items yet.")
            return
        mine = queues.my_reviewed_items(store.reviews(queues.AUDIT), self.reviewer or "")
        default = self.audit_size or min(total, max(queues.DEFAULT_AUDIT_SIZE, len(mine)))
        self._asking = True
        self.app.push_screen(
            AskScreen(
                "Audit sample size",
                f"A random sample of the project's {total} items. Only these reviews "
                "count towards alpha; a larger size keeps the items already drawn.",
                str(default),
                lambda text: queues.check_audit_size(text, total),
            ),
            self._got_audit_size,
        )

    def _got_audit_size(self, text: str | None) -> None:
        self._asking = False
        if text is None and self.audit_size is None:
            self._set_status("the audit queue needs a sample size: press z (or t: hardest first)")
            self._show_message(
                "Press z to choose the audit sample size, or t for the hardest-first queue."
            )
            return
        if text is not None:
            self.audit_size = int(text)
            self.queue = queues.AUDIT
            self.current = None
        self.activate()

    def action_switch_queue(self) -> None:
        self.queue = queues.next_queue(self.queue)
        self.blind = True
        self.current = None
        self.activate()

    def action_toggle_blind(self) -> None:
        if self.queue == queues.AUDIT:
            self.app.notify(
                "the audit sample stays blind: its reviews measure agreement",
                severity="warning",
                markup=False,
            )
            return
        self.blind = not self.blind
        if self.current is not None and not self.revealed:
            self._show_item()

    def action_save(self) -> None:
        store = self.annotator.store
        if self.current is None or store is None or self.reviewer is None:
            return
        if self.revealed:
            self._next_item()
            return
        pickers = list(self.query(ValuePicker))
        missing = [p for p in pickers if p.value is None]
        if missing:
            self.app.notify(
                f"pick a value for {missing[0].dimension.name}", severity="warning", markup=False
            )
            self._activate_picker(pickers.index(missing[0]))
            return
        rows = [(self.current, p.dimension.name, p.value) for p in pickers if p.value is not None]
        try:
            store.save_reviews(self.reviewer, self.queue, rows)  # committed on return
        except (sqlite3.Error, AnnotatorError) as exc:
            self.app.notify(f"review not saved: {exc}", severity="error", markup=False)
            return
        self.revealed = True
        if self.queue == queues.AUDIT:
            self.sample_done += 1
        for picker in pickers:
            picker.locked = True
        self._reveal(pickers)
        self._update_status()
        self.post_message(self.Saved(self.current, self.queue))

    def action_skip(self) -> None:
        if self.current is None:
            return
        if not self.revealed:
            self.todo.append(self.current)  # back at the end of the queue, not dropped
            self.skipped += 1
        self._next_item()

    def action_dimension(self, step: int) -> None:
        pickers = list(self.query(ValuePicker))
        if not pickers or self.current is None:
            return
        self._activate_picker((self._active + step) % len(pickers))

    def action_value(self, how: str, arg: int) -> None:
        picker = self.active_picker
        if picker is not None and self.current is not None:
            getattr(picker, f"action_{how}")(arg)

    async def on_key(self, event) -> None:
        # Every review key is handled here, in this widget's own queue, in the order typed.
        # (Left to the bindings, a key would bubble up to the app and run later than a digit
        # typed after it: "4 tab 5" would give the 5 to the first dimension.) BINDINGS still
        # name the keys for the footer.
        picker = self.active_picker
        if (event.character or "").isdigit():
            event.stop()
            event.prevent_default()
            if picker is not None and self.current is not None:
                picker.pick_digit_now(int(event.character))
            return
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            event.stop()
            event.prevent_default()
            await self.run_action(binding.action)
            return

    @property
    def active_picker(self) -> ValuePicker | None:
        pickers = list(self.query(ValuePicker))
        return pickers[self._active] if 0 <= self._active < len(pickers) else None

    def _activate_picker(self, index: int) -> None:
        self._active = index
        for i, picker in enumerate(self.query(ValuePicker)):
            picker.active = i == index
            if i == index:
                picker.scroll_visible(animate=False)

    def action_scroll_text(self, step: int) -> None:
        text = self.query_one("#review-text", VerticalScroll)
        text.scroll_page_down() if step > 0 else text.scroll_page_up()

    # -- internals --------------------------------------------------------------------------

    def _load_queue(self) -> None:
        store = self.annotator.store
        assert store is not None and self.reviewer is not None
        size = self.audit_size or queues.DEFAULT_AUDIT_SIZE
        built = queues.build(store, self.annotator.run_id, self.reviewer, self.queue, size)
        self.todo, self._model = built.todo, built.model
        if self.queue == queues.AUDIT:
            self.sample_done, self.sample_size = built.audit.done, len(built.audit.sample)
        self.skipped = 0

    def _next_item(self) -> None:
        self.current = self.todo.pop(0) if self.todo else None
        self.revealed = False
        for picker in self.query(ValuePicker):
            picker.reset()
        self._activate_picker(0)
        self._show_item()
        self._focus_picker()

    def _focus_picker(self) -> None:
        # The view keeps the focus (see ValuePicker); a new item starts at the first dimension.
        focus_now(self)

    def _show_item(self) -> None:
        reveal = self.query_one("#review-reveal", Static)
        reveal.remove_class("-shown")
        reveal.update("")  # blind: not even hidden text of the model's answer stays around
        pickers = self.query_one("#review-pickers")
        pickers.display = self.current is not None
        self._update_status()
        if self.current is None:
            if self.reviewer is not None and self.annotator.store is not None:
                sample = (self.sample_done, self.sample_size)
                self._show_message(review_text.empty_text(self.queue, sample))
            return
        item = self.annotator.item(self.current)
        fields = None if item is None else item.fields
        content = review_text.item_content(self.current, fields, self.annotator.rubric)
        self.query_one("#review-item", Static).update(content)
        self.query_one("#review-text", VerticalScroll).scroll_home(animate=False)
        if not self.blind:
            self._show_model_answer()

    def _show_message(self, text: str) -> None:
        self.query_one("#review-pickers").display = False
        self.query_one("#review-item", Static).update(Content(text))

    def _model_labels(self) -> dict[str, Label] | None:
        labels = self._model.get(self.current or "")
        if (
            labels is None
            and self.annotator.store is not None
            and self.annotator.run_id is not None
        ):
            # Annotated since the queue was built: read the run again.
            self._model = {
                i: lab for i, lab, _ in self.annotator.store.annotations(self.annotator.run_id)
            }
            labels = self._model.get(self.current or "")
        return None if labels is None else multi_labels(self.annotator.rubric, labels)

    def _show_model_answer(self) -> None:
        """Not blind (hardest-first and teach queues only): the model's answer before saving."""
        reveal = self.query_one("#review-reveal", Static)
        reveal.update(review_text.model_answer_content(self._model_labels() or {}))
        reveal.add_class("-shown")

    def _reveal(self, pickers: list[ValuePicker]) -> None:
        picks = [(p.dimension.name, p.value, p.value_text) for p in pickers]
        reveal = self.query_one("#review-reveal", Static)
        reveal.update(review_text.reveal_content(self._model_labels(), picks))
        reveal.add_class("-shown")

    def _set_status(self, text: str) -> None:
        self.query_one("#review-status", Static).update(text)

    def _update_status(self) -> None:
        left = len(self.todo) + (1 if self.current is not None and not self.revealed else 0)
        sample = (self.sample_done, self.sample_size)
        self._set_status(
            review_text.status_text(
                self.queue, self.reviewer, left, self.revealed, self.blind, sample
            )
        )
