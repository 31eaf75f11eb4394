"""`c` on the Agreement tab: how many reviews are enough, the head's learning curve per
dimension (annotator.calibration.curve, the same lines as `annotator calibrate --curve`).

The heads are fitted in a worker thread with its own store connection (a few seconds on a few
hundred reviewed items); nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from annotator.errors import AnnotatorError


class CurveScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    CurveScreen { align: center middle; }
    CurveScreen > VerticalScroll {
        width: 100%; height: 100%; border: round $accent; padding: 0 1; background: $surface;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,c", "close", "Close")]

    def __init__(self, project: Path, run_id: int | None) -> None:
        super().__init__()
        self.project = project
        self.run_id = run_id
        self.lines: list[str] | None = None  # what is on screen once computed (tests read it)

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "How many reviews are enough · esc closes"
            yield Static("Fitting heads on subsets of the reviewed items...", id="curve-text")

    def on_mount(self) -> None:
        self._compute()

    @work(thread=True, exit_on_error=False)
    def _compute(self) -> None:
        from annotator.calibration.curve import describe, learning_curves
        from annotator.project.store import Store

        try:
            with Store(self.project) as store:
                curves, groups = learning_curves(store, self.run_id)
            lines = describe(curves, groups)
        except AnnotatorError as exc:
            lines = [str(exc)]
        except Exception as exc:  # shown here, never as a traceback
            lines = [f"the curve failed: {type(exc).__name__}: {exc}"]
        self.app.call_from_thread(self._show, lines)

    def _show(self, lines: list[str]) -> None:
        self.lines = lines
        self.query_one("#curve-text", Static).update(Content("\n".join(lines)))

    def action_close(self) -> None:
        self.dismiss(None)
