"""Agreement: can I trust this dimension? One line per dimension, each pair on enter.

A row holds the reviewers' alpha among themselves (the ceiling), the model's mean alpha
against them, its share of the ceiling, its interval and a verdict (annotator.ceiling,
annotator.dashboard: the same lines as `annotator agree`), so a six-dimension rubric fits one
80x24 screen. Enter on a row opens the dimension: each pair of coders and the picture of where
the model and the reviewers differ (screens/dimension.py); `c` the learning curve
(screens/curve.py); `k` calibrates from these reviews (screens/calibrate.py).

The numbers come from `annotator.project.reviews.agreement_report` with the CLI's defaults (1000
bootstrap resamples, seed 0), so they equal `annotator agree` on the same project. They are
computed in a worker thread (the bootstrap takes a moment) with its own store connection, and
recomputed whenever a review is saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import OptionList, Static

from annotator import dashboard
from annotator.errors import AnnotatorError
from annotator.project.reviews import UNBIASED_QUEUES, agreement_report
from annotator.project.store import Store
from annotator.tui.confusion import Confusion, confusions
from annotator.tui.focus import focus_now
from annotator.tui.queues import HARD
from annotator.tui.screens.calibrate import CalibrateScreen
from annotator.tui.screens.curve import CurveScreen
from annotator.tui.screens.dimension import DimensionScreen, cells_content

if TYPE_CHECKING:
    from annotator.tui.app import AnnotatorApp


def compute(project: Path, bootstrap: int) -> tuple[dict, list[Confusion], int]:
    """Runs in a worker thread: its own connection, closed before returning."""
    with Store(project) as store:
        report = agreement_report(store, bootstrap=bootstrap)
        rubric = store.rubric()
        assert rubric is not None  # agreement_report raised otherwise
        reviews = store.reviews()
        pairs = confusions(rubric, store.annotations(report["run"]), reviews)
    # Items with a hardest-first review that counts nowhere: where the same reviewer also
    # reviewed the item in the audit sample (or imported a label), that review is counted.
    counted = {(r[0], r[2]) for r in reviews if r[4] in UNBIASED_QUEUES}
    hard = len({r[0] for r in reviews if r[4] == HARD and (r[0], r[2]) not in counted})
    return report, pairs, hard


class AgreementView(VerticalScroll, can_focus=True):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "curve", "Reviews enough?"),
        Binding("k", "calibrate", "Calibrate"),
    ]
    DEFAULT_CSS = """
    AgreementView { padding: 0 1; }
    AgreementView Static { height: auto; }
    AgreementView #agree-dims { background: transparent; }
    AgreementView #agree-head { margin-top: 1; }
    AgreementView #agree-legend { margin-top: 1; }
    """

    def __init__(self, bootstrap: int = 1000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.report: dict | None = None  # what is on screen (tests compare it with the CLI)
        self.pairs: list[Confusion] = []
        self._hard = 0
        # Threads cannot be stopped: a slow older computation must not overwrite a newer one.
        self._generation = 0

    @property
    def annotator(self) -> AnnotatorApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static("", id="agree-title")
        yield Static("", id="agree-head")
        yield OptionList(id="agree-dims", compact=True)
        yield Static("", id="agree-legend")

    def focus_default(self) -> None:
        """The dimension list when it has rows (arrows and enter work at once), else the view."""
        rows = self.query_one("#agree-dims", OptionList)
        focus_now(rows if rows.option_count else self)

    def recompute(self) -> None:
        info = self.annotator.info
        if info is None or self.annotator.store is None:
            self._show_text("No project open (see the Project tab).")
            return
        if self.report is None:
            self._show_text("Computing agreement...")
        self._generation += 1
        self._compute(info.project, self.bootstrap, self._generation)

    @work(thread=True, exclusive=True, group="agreement", exit_on_error=False)
    def _compute(self, project: Path, bootstrap: int, generation: int) -> None:
        try:
            report, pairs, hard = compute(project, bootstrap)
        except AnnotatorError as exc:
            self.app.call_from_thread(self._latest, generation, self._show_text, str(exc))
            return
        except Exception as exc:  # shown in the app, never as a traceback
            self.app.call_from_thread(
                self._latest,
                generation,
                self._show_text,
                f"agreement failed: {type(exc).__name__}: {exc}",
            )
            return
        self.app.call_from_thread(self._latest, generation, self._show, report, pairs, hard)

    def _latest(self, generation: int, show, *args) -> None:
        if generation != self._generation:
            return
        try:
            show(*args)
        except Exception as exc:  # a bug here must still show up, not vanish with the thread
            self._show_text(f"agreement could not be shown: {type(exc).__name__}: {exc}")

    def _show_text(self, text: str) -> None:
        self.report = None
        self.query_one("#agree-title", Static).update(Content(text))
        for part in ("#agree-head", "#agree-legend"):
            self.query_one(part, Static).update("")
        self.query_one("#agree-dims", OptionList).clear_options()

    def _show(self, report: dict, pairs: list[Confusion], hard: int) -> None:
        self.report, self.pairs, self._hard = report, pairs, hard
        self._draw()

    def on_resize(self, event: events.Resize) -> None:
        if self.report is not None:
            self._draw()  # the columns fit the new width

    def _draw(self) -> None:
        report = self.report
        assert report is not None
        title = [
            Content.assemble(
                ("Krippendorff's alpha", "bold"),
                f", run {report['run']}, {report['bootstrap']} bootstrap resamples",
            ),
            Content.styled(
                f"audit sample and imported reviews only; {self._hard} hardest-first item(s) "
                "not counted",
                "$text-muted",
            ),
        ]
        self.query_one("#agree-title", Static).update(Content("\n").join(title))
        head = self.query_one("#agree-head", Static)
        legend = self.query_one("#agree-legend", Static)
        rows = self.query_one("#agree-dims", OptionList)
        if not report["reviewers"]:
            head.update("No audit reviews yet: review the audit sample in the Review tab (r).")
            legend.update("")
            rows.clear_options()
            return
        cells = [dashboard.summary_row(d) for d in report["dimensions"]]
        # The view's width less its padding; before the first layout, an 80-column screen's.
        width = self.scrollable_content_region.width
        table = dashboard.fit(dashboard.SUMMARY_HEAD, cells, width if width >= 40 else 78)
        head.update(Content.styled(dashboard.text(table.header()), "bold underline"))
        highlighted = rows.highlighted
        rows.set_options([cells_content(table.line(row)) for row in cells])
        if cells:
            rows.highlighted = min(highlighted or 0, len(cells) - 1)
            if self.has_focus:  # the rows came after the tab was opened: arrows move on them
                focus_now(rows)
        legend.update(
            Content.styled(
                "\n".join(
                    [
                        *dashboard.LEGEND,
                        "enter: pairs of coders, where they differ · c: reviews enough? · "
                        "k: calibrate",
                    ]
                ),
                "$text-muted",
            )
        )

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if self.report is None:
            return
        entry = self.report["dimensions"][event.option_index]
        confusion = next((c for c in self.pairs if c.dimension.name == entry["dimension"]), None)
        self.app.push_screen(DimensionScreen(entry, self.report["reviewers"], confusion))

    def action_curve(self) -> None:
        info = self.annotator.info
        if info is None:
            return
        run = None if self.report is None else self.report["run"]
        self.app.push_screen(CurveScreen(info.project, run))

    def action_calibrate(self) -> None:
        info = self.annotator.info
        if info is None or self.annotator.store is None:
            self.app.notify("no project open (see the Project tab)", severity="warning")
            return
        self.app.push_screen(CalibrateScreen(info.project, self.annotator.run_id, self.bootstrap))
