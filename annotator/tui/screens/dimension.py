"""One dimension's agreement in full: its summary line, each pair of coders, and where the
model and the reviewers differ (opened with enter on the Agreement tab's row)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from annotator import dashboard
from annotator.tui.confusion import Confusion
from annotator.tui.widgets.confusion_view import confusion_lines

# Style keys of annotator.dashboard cells, in the theme's colours.
STYLES = {
    "reliable": "bold $text-success",
    "tentative": "bold $text-warning",
    "unreliable": "bold $text-error",
    "undefined": "$text-muted",
    "": "",
}


def cells_content(cells: list[dashboard.Cell]) -> Content:
    """Cells as one line; names stay plain text (Content, never markup)."""
    return Content.assemble(*((text, STYLES[key]) for text, key in cells))


class DimensionScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    DimensionScreen { align: center middle; }
    DimensionScreen > VerticalScroll {
        width: 100%; height: 100%; border: round $accent; padding: 0 1; background: $surface;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, entry: dict, reviewers: list[str], confusion: Confusion | None) -> None:
        super().__init__()
        self.entry = entry
        self.reviewers = reviewers
        self.confusion = confusion

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = Content(f"{self.entry['dimension']} · esc closes")
            yield Static(self._content(), id="dimension-detail")

    def _content(self) -> Content:
        entry = self.entry
        width = 74  # inside the border and padding of an 80-column screen
        summary = dashboard.summary_row(entry)
        table = dashboard.fit(dashboard.SUMMARY_HEAD, [summary], width)
        rows = dashboard.pair_rows(entry, self.reviewers)
        pairs = dashboard.fit(dashboard.PAIRS_HEAD, rows, width)
        lines = [
            Content.styled(f"{entry['level']} scale", "$text-muted"),
            Content.styled(dashboard.text(table.header()), "bold underline"),
            cells_content(table.line(summary)),
            Content(""),
            Content.styled(dashboard.text(pairs.header()), "bold underline"),
            *(cells_content(pairs.line(row)) for row in rows),
        ]
        for comp in entry["comparisons"]:
            if comp["note"]:
                lines.append(
                    Content.styled(f"{' vs '.join(comp['coders'])}: {comp['note']}", "$text-muted")
                )
        if self.confusion is not None:
            lines += [Content(""), *confusion_lines(self.confusion)]
        return Content("\n").join(lines)

    def action_close(self) -> None:
        self.dismiss(None)
