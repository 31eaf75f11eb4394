"""The main screen: one tab per task, the footer with the keys of the focused view."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane

from annotator.tui.focus import focus_now
from annotator.tui.widgets.agreement_view import AgreementView
from annotator.tui.widgets.annotate_view import AnnotateView
from annotator.tui.widgets.browse_view import BrowseView
from annotator.tui.widgets.project_view import ProjectView
from annotator.tui.widgets.review_view import ReviewView

if TYPE_CHECKING:
    from annotator.tui.app import AnnotatorApp

# Tab id, title with its key underlined (the keys are app bindings, see AnnotatorApp).
TABS = (
    ("project", "[b u]P[/]roject"),
    ("annotate", "[b u]A[/]nnotate"),
    ("browse", "[b u]B[/]rowse"),
    ("review", "[b u]R[/]eview"),
    ("agreement", "A[b u]g[/]reement"),
)


class MainScreen(Screen):
    DEFAULT_CSS = """
    MainScreen TabbedContent { height: 1fr; }
    MainScreen TabPane { padding: 0; }
    """

    def compose(self) -> ComposeResult:
        app: AnnotatorApp = self.app  # type: ignore[assignment]
        views = {
            "project": ProjectView(id="project-view"),
            "annotate": AnnotateView(id="annotate-view"),
            "browse": BrowseView(app.tie_margin, id="browse-view"),
            "review": ReviewView(app.reviewer, id="review-view"),
            "agreement": AgreementView(app.bootstrap, id="agreement-view"),
        }
        with TabbedContent(initial="project", id="tabs"):
            for tab_id, title in TABS:
                with TabPane(title, id=tab_id):
                    yield views[tab_id]
        yield Footer()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.focus_tab(event.pane.id or "")

    def focus_tab(self, tab_id: str) -> None:
        # Keys work at once on the new tab: its main widget takes the focus.
        if tab_id == "project":
            focus_now(self.query_one(ProjectView))
        elif tab_id == "annotate":
            self.query_one(AnnotateView).focus_default()
        elif tab_id == "browse":
            self.query_one(BrowseView).focus_default()
        elif tab_id == "review":
            self.query_one(ReviewView).activate()
        elif tab_id == "agreement":
            self.query_one(AgreementView).focus_default()
