"""A one-line question in a modal: the reviewer's name, the audit sample size."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class AskScreen(ModalScreen[str | None]):
    """Dismisses with the answer, or None on escape. `check` returns a problem or None."""

    DEFAULT_CSS = """
    AskScreen { align: center middle; }
    AskScreen > Vertical {
        width: 64; max-width: 100%; height: auto; border: round $accent; padding: 0 1;
        background: $surface;
    }
    AskScreen #ask-title { text-style: bold; }
    AskScreen #ask-help { color: $text-muted; }
    AskScreen #ask-problem { color: $text-error; height: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        title: str,
        help_text: str,
        default: str = "",
        check: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.title_text, self.help_text, self.default = title, help_text, default
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, id="ask-title", markup=False)
            yield Static(self.help_text, id="ask-help", markup=False)
            yield Input(self.default, id="ask-input", select_on_focus=True)
            yield Static("", id="ask-problem", markup=False)
            yield Static("enter: ok · esc: cancel", id="ask-keys", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        answer = event.value.strip()
        problem = self.check(answer) if self.check else None
        if problem:
            self.query_one("#ask-problem", Static).update(problem)
            return
        self.dismiss(answer)

    def action_cancel(self) -> None:
        self.dismiss(None)
