"""`?`: every key of the app on one screen (the footer only has room for a few)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Everywhere",
        [
            ("p a b r g", "project · annotate · browse · review · agreement"),
            ("?  ctrl+t", "this help (esc closes) · light / dark colours"),
            ("ctrl+q", "quit (everything finished is already saved)"),
        ],
    ),
    (
        "Annotate",
        [
            ("space  c", "start · pause · resume · cancel (finished items stay)"),
        ],
    ),
    (
        "Browse",
        [
            ("↑ ↓  enter", "move · open the item (full text, answers, reviews)"),
            ("s", "sort: file order · least sure first · label · id"),
            ("f  - +", "filter: all · low confidence · reviewed · not · threshold"),
            ("/", "filter by label (joy, or emotion=joy); empty clears"),
        ],
    ),
    (
        "Review (blind: the model's answer shows only after you save)",
        [
            ("1-9 0  arrows", "pick a value (two quick digits for 10 and up)"),
            ("tab  shift+tab", "next / previous dimension"),
            ("enter  s", "save, then enter again for the next item · skip for now"),
            ("t  z  n", "queue: audit sample ⇄ hardest first · sample size · name"),
            ("v", "hardest-first queue only: show the model's answer"),
            ("pgup pgdn", "scroll the item's text"),
        ],
    ),
    (
        "Agreement",
        [
            ("↑ ↓  enter", "move · open a dimension: each pair of coders, confusion"),
            ("c  k", "reviews enough? · calibrate (then a adopt, w write file)"),
        ],
    ),
]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 78; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; padding: 0 1; background: $surface;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close")]

    def compose(self) -> ComposeResult:
        lines: list[Content] = []
        for section, keys in KEYS:
            lines.append(Content.styled(section, "bold $text-accent"))
            for key, what in keys:
                lines.append(Content.assemble("  ", (key.ljust(15), "bold"), what))
        with VerticalScroll():
            yield Static(Content("\n").join(lines))

    def action_close(self) -> None:
        self.dismiss(None)
