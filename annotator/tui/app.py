"""The app object, built by `make_app` for the `annotator tui` command and the tests alike.

The app holds what every view shares: the opened project (`info`), a store connection for the
UI thread (`store`; workers open their own, a SQLite connection belongs to its thread), the
current run and the items. Views ask the app; the app tells views when something changed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar, cast

from textual import work
from textual.actions import SkipAction
from textual.app import App
from textual.binding import Binding, BindingType
from textual.widgets import Input, TabbedContent
from textual.worker import Worker, WorkerState

from annotator.data import Item
from annotator.errors import AnnotatorError
from annotator.inference.backend import EngineSettings
from annotator.jobs.spec import DEFAULT_TIE_MARGIN
from annotator.project.store import Store
from annotator.rubric import Rubric
from annotator.tui.annotation import ItemDone, Started
from annotator.tui.launch import Launch, resolve_launch
from annotator.tui.project import ProjectInfo, counts, latest_run_id, load_project
from annotator.tui.screens.help import HelpScreen
from annotator.tui.screens.main import MainScreen
from annotator.tui.terminal import driver_class
from annotator.tui.widgets.agreement_view import AgreementView
from annotator.tui.widgets.annotate_view import AnnotateView
from annotator.tui.widgets.browse_view import BrowseView
from annotator.tui.widgets.project_view import ProjectView
from annotator.tui.widgets.review_view import ReviewView


class AnnotatorApp(App[None]):
    TITLE = "annotator"
    # The tab keys are priority bindings: handled as they arrive, so a key typed right after
    # ("a" then space) already reaches the new tab (see tui.focus). They step aside for text
    # fields and dialogs (SkipAction in action_show_tab).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "show_tab('project')", "Project", show=False, priority=True),
        Binding("a", "show_tab('annotate')", "Annotate", show=False, priority=True),
        Binding("b", "show_tab('browse')", "Browse", show=False, priority=True),
        Binding("r", "show_tab('review')", "Review", show=False, priority=True),
        Binding("g", "show_tab('agreement')", "Agreement", show=False, priority=True),
        Binding("question_mark", "help", "Keys"),
        Binding("ctrl+t", "toggle_dark", "Light/dark", show=False),
    ]

    def __init__(
        self,
        launch: Launch,
        *,
        reviewer: str | None = None,
        settings: EngineSettings | None = None,
        bootstrap: int = 1000,
        tie_margin: float = DEFAULT_TIE_MARGIN,
    ) -> None:
        super().__init__()
        self.launch = launch
        self.reviewer = reviewer
        self.main: MainScreen
        self.settings = settings or EngineSettings()
        self.bootstrap = bootstrap
        self.tie_margin = tie_margin
        self.info: ProjectInfo | None = None
        self.store: Store | None = None
        self.run_id: int | None = None
        self._items: dict[str, Item] = {}
        self._crash_line: str | None = None  # printed on exit after a crash

    def get_default_screen(self) -> MainScreen:
        self.main = MainScreen()
        return self.main

    def on_mount(self) -> None:
        # After the first refresh: every view is composed by the time the project arrives.
        self.call_after_refresh(self._load)

    # -- shared state -----------------------------------------------------------------------

    @property
    def rubric(self) -> Rubric | None:
        return self.info.rubric if self.info else None

    def item(self, item_id: str) -> Item | None:
        if item_id not in self._items and self.store is not None:
            self._items = {i.id: i for i in self.store.items()}
        return self._items.get(item_id)

    # -- opening the project ----------------------------------------------------------------

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load(self) -> ProjectInfo:
        return load_project(self.launch)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group != "load":
            return
        if event.state == WorkerState.SUCCESS:
            self._opened(cast(ProjectInfo, worker.result))
        elif event.state == WorkerState.ERROR:
            error = worker.error
            self.notify(
                f"cannot open the project: {type(error).__name__}: {error}",
                severity="error",
                markup=False,
                timeout=15,
            )

    def _opened(self, info: ProjectInfo) -> None:
        self.info = info
        for problem in info.errors + ([info.model_error] if info.model_error else []):
            self.notify(problem, severity="error", markup=False, timeout=10)
        if info.ready:
            try:
                self.store = Store(info.project)
                self.run_id = latest_run_id(self.store)
                self._items = {i.id: i for i in self.store.items()}
            except AnnotatorError as exc:
                self.store = None
                self.notify(str(exc), severity="error", markup=False, timeout=10)
        self.main.query_one(AnnotateView).reset_project()
        self.main.query_one(ReviewView).reset_project()
        self.main.query_one(BrowseView).reload()
        self.main.query_one(AgreementView).recompute()
        self._show_counts()
        self.main.focus_tab(self.main.query_one(TabbedContent).active)

    def _show_counts(self) -> None:
        if self.info is None:
            return
        numbers = counts(self.store, self.run_id) if self.store is not None else None
        self.main.query_one(ProjectView).show(self.info, numbers)

    # -- what the views report --------------------------------------------------------------

    def on_annotate_view_progress(self, message: AnnotateView.Progress) -> None:
        event = message.event
        if isinstance(event, Started):
            if event.run_id != self.run_id:
                self.run_id = event.run_id  # a new run (other model or settings)
                self.main.query_one(BrowseView).reload()
            self._items = {i.id: i for i in self.store.items()} if self.store else {}
        elif isinstance(event, ItemDone):
            self.main.query_one(BrowseView).set_labels(event.item_id, event.labels)
        self._show_counts()
        if not isinstance(event, ItemDone):
            self.main.query_one(AgreementView).recompute()

    def on_review_view_saved(self, message: ReviewView.Saved) -> None:
        self.main.query_one(BrowseView).set_reviewed(message.item_id)
        self.main.query_one(AgreementView).recompute()
        self._show_counts()

    def show_run(self, run_id: int) -> None:
        """Run `run_id` was made the project's current run (calibrated, then adopted)."""
        self.run_id = run_id
        self.main.query_one(BrowseView).reload()
        self.main.query_one(AgreementView).recompute()
        self._show_counts()

    # -- actions ----------------------------------------------------------------------------

    def action_show_tab(self, tab: str) -> None:
        if self.screen is not self.main or isinstance(self.focused, Input):
            raise SkipAction()  # a dialog or a text field has the key
        self.main.query_one(TabbedContent).active = tab
        self.main.focus_tab(tab)  # now, not when TabActivated arrives (see tui.focus)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def on_unmount(self) -> None:
        if self.store is not None:
            self.store.close()

    # -- crashes ----------------------------------------------------------------------------

    def _handle_exception(self, error: Exception) -> None:
        """Every unhandled error ends here: in a handler, a timer, rendering, or a worker with
        exit_on_error (as textual.worker.WorkerFailed). Textual's own prints a traceback with
        every frame's locals, which hold item text; this writes a private report without locals
        or messages (tui.crash) and leaves one line to print once the terminal is restored.
        The app still exits with code 1, and `run_test` still re-raises the error for tests."""
        from annotator.tui.crash import crash_line

        self._return_code = 1
        if self._exception is None:  # a later error while closing: the first is reported
            self._exception = error
            self._exception_event.set()
            self._crash_line = crash_line(error)
        self._close_messages_no_wait()

    def _print_error_renderables(self) -> None:
        # Called by Textual after the app's screen is gone. Plain print: one line, however
        # narrow the terminal (rich would wrap or cut the report's path).
        line, self._crash_line = self._crash_line, None
        if line:
            print(line, file=sys.stderr, flush=True)
        super()._print_error_renderables()


def make_app(
    project: str | Path | None = None,
    data: str | Path | None = None,
    rubric: str | Path | None = None,
    model: str | Path | None = None,
    *,
    base: str | Path | None = None,
    reviewer: str | None = None,
    settings: EngineSettings | None = None,
    bootstrap: int = 1000,
    tie_margin: float = DEFAULT_TIE_MARGIN,
) -> AnnotatorApp:
    """The app for `annotator tui [PROJECT] [--data] [--rubric] [--model]`.

    `reviewer` skips the name prompt (tests); the others mirror `annotator annotate`.
    """
    return AnnotatorApp(
        resolve_launch(project, data, rubric, model, base),
        reviewer=reviewer,
        settings=settings,
        bootstrap=bootstrap,
        tie_margin=tie_margin,
    )


def run_app(
    project: str | Path | None = None,
    data: str | Path | None = None,
    rubric: str | Path | None = None,
    model: str | Path | None = None,
    base: str | Path | None = None,
) -> None:
    app = make_app(project, data, rubric, model, base=base)
    # A real terminal: draw on a private fd (see tui.terminal). Tests use the headless driver.
    app.driver_class = driver_class() or app.driver_class
    app.run()
    if app.return_code:  # a crash (its one line is printed): the command fails too
        raise SystemExit(app.return_code)
