"""Annotation: the core engine in one worker thread, a progress bar, pause, resume, cancel.

The worker thread owns the engine and the job's store connection from start to end (see
`tui.annotation`); this widget only flips the runner's events and shows what the thread
reports. Results are posted as they are committed, so the browse table fills in live.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, ProgressBar, Static

from annotator.errors import AnnotatorError
from annotator.multilabel import multi_labels, shown
from annotator.tui import formatting as fmt
from annotator.tui.annotation import AnnotationRunner, Event, Finished, ItemDone, Paused, Started
from annotator.tui.focus import focus_now

if TYPE_CHECKING:
    from annotator.tui.app import AnnotatorApp

LOG_ROWS = 500  # the log table keeps the latest rows only; the browse view has them all


class AnnotateView(Vertical):
    DEFAULT_CSS = """
    AnnotateView { padding: 0 1; }
    AnnotateView #annotate-info { height: auto; }
    AnnotateView #annotate-state { height: auto; margin-top: 1; text-style: bold; }
    AnnotateView #annotate-state.-error { color: $text-error; }
    AnnotateView ProgressBar { margin-top: 1; }
    AnnotateView ProgressBar Bar { width: 1fr; }
    AnnotateView #annotate-stats { height: 1; }
    AnnotateView DataTable { height: 1fr; margin-top: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "start_pause", "Start/pause"),
        Binding("c", "cancel", "Cancel"),
    ]

    class Progress(Message):
        """What the worker thread reported (Started, ItemDone, Finished)."""

        def __init__(self, event: Event) -> None:
            super().__init__()
            self.event = event

    class Failed(Message):
        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runner: AnnotationRunner | None = None
        # idle | loading | running | pausing | paused | cancelling | done | error
        self.state = "idle"

    @property
    def annotator(self) -> AnnotatorApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static("", id="annotate-info", markup=False)
        yield Static("", id="annotate-state", markup=False)
        yield ProgressBar(total=None, show_eta=False, id="annotate-progress")
        yield Static("", id="annotate-stats", markup=False)
        yield DataTable(id="annotate-log", cursor_type="row", zebra_stripes=True)

    def reset_project(self) -> None:
        info, store = self.annotator.info, self.annotator.store
        log = self.query_one("#annotate-log", DataTable)
        log.clear(columns=True)
        rubric = self.annotator.rubric
        if rubric is not None:
            log.add_column("id", key="id")
            for dim in rubric.dimensions:
                log.add_column(
                    dim.name, width=max(len(dim.name), *(len(str(v)) for v in dim.values))
                )
                log.add_column("p", width=4)
        if info is None:
            return
        model = info.model.path.name if info.model else "no model"
        data = fmt.shown_path(info.data) if info.data else "no data file"
        self.query_one("#annotate-info", Static).update(
            f"{data} → {fmt.shown_path(info.project)}\nmodel {model} on {info.backend.upper()}"
        )
        bar = self.query_one(ProgressBar)
        if store is not None and info.data_items:
            run_id = self.annotator.run_id
            done = len(store.done_ids(run_id)) if run_id is not None else 0
            bar.update(total=info.data_items, progress=min(done, info.data_items))
            self._stats(
                f"{done}/{info.data_items} items annotated"
                + (f" (run {run_id})" if run_id is not None else "")
            )
        if info.can_annotate:
            self._set_state("idle", "Ready: space starts (or resumes) annotating the data file.")
        else:
            why = info.model_error or (info.errors[0] if info.errors else "no data file (--data)")
            self._set_state("error", f"Cannot annotate: {why}")

    # -- actions ----------------------------------------------------------------------------

    def action_start_pause(self) -> None:
        if self.state in ("idle", "done"):
            self.start()
        elif self.state in ("loading", "running") and self.runner:
            self.runner.pause()
            self._set_state("pausing", "Pausing after the item in progress...")
        elif self.state in ("pausing", "paused") and self.runner:
            self.runner.resume()
            self._set_state("running", "Annotating: space pauses, c cancels.")

    def action_cancel(self) -> None:
        if self.runner and self.state in ("loading", "running", "pausing", "paused"):
            self.runner.cancel()
            self._set_state("cancelling", "Cancelling after the item in progress...")

    def start(self) -> None:
        info = self.annotator.info
        if info is None or not info.can_annotate:
            self.app.notify("nothing to annotate: see the Project tab", severity="warning")
            return
        assert info.data is not None and info.model is not None
        self.runner = AnnotationRunner(
            info.data,
            info.project,
            info.launch.rubric,
            info.model.path,
            self.annotator.settings,
            self.annotator.tie_margin,
            info.launch.base,
        )
        self._set_state("loading", "Loading the model...")
        self._annotate(self.runner)

    @work(thread=True, exclusive=True, group="annotate", exit_on_error=False)
    def _annotate(self, runner: AnnotationRunner) -> None:
        # Everything below runs in this one worker thread (engine and job store included).
        try:
            runner.run(lambda event: self.post_message(self.Progress(event)))
        except AnnotatorError as exc:
            self.post_message(self.Failed(str(exc)))
        except Exception as exc:  # shown in the app, never as a traceback
            self.post_message(self.Failed(f"unexpected error: {type(exc).__name__}: {exc}"))

    def on_unmount(self) -> None:
        # On quit: the thread finishes its item, closes the model and ends; a paused thread
        # would otherwise wait for ever and keep the process alive.
        if self.runner is not None:
            self.runner.cancel()

    # -- reports from the worker ------------------------------------------------------------

    def on_annotate_view_progress(self, message: Progress) -> None:
        event = message.event
        bar = self.query_one(ProgressBar)
        if isinstance(event, Started):
            bar.update(total=event.total, progress=event.done_before)
            resumed = f", resuming run {event.run_id}" if event.resumed else f", run {event.run_id}"
            if self.state == "loading":
                self._set_state("running", "Annotating: space pauses, c cancels.")
            self._stats(
                f"{event.done_before}/{event.total} items{resumed} · "
                f"{event.skipped} rows cannot be annotated · {event.backend.upper()}"
            )
        elif isinstance(event, ItemDone):
            bar.update(total=event.total, progress=event.done)
            self._stats(
                f"{event.done}/{event.total} items · {event.rate:.2f} items/s · "
                f"ETA {fmt.duration(event.eta)} · flagged {event.flagged}"
            )
            self._log(event)
        elif isinstance(event, Paused):
            if self.state == "pausing":
                self._set_state(
                    "paused",
                    f"Paused: {event.done} of {event.total} items saved; space resumes, c cancels.",
                )
        elif isinstance(event, Finished):
            self.runner = None
            if event.outcome == "cancelled":
                self._set_state(
                    "done",
                    f"Cancelled: {event.done} of {event.total} items are saved; space resumes.",
                )
            else:
                self._set_state(
                    "done",
                    f"Finished: {event.done} of {event.total} items annotated"
                    f" ({event.done_now} now, {event.flagged} flagged).",
                )

    def on_annotate_view_failed(self, message: Failed) -> None:
        self.runner = None
        self._set_state("error", f"Annotation stopped: {message.error}")
        self.app.notify(
            message.error, title="annotation failed", severity="error", markup=False, timeout=10
        )
        self.state = "idle"  # the user may fix the cause and try again

    def _log(self, event: ItemDone) -> None:
        log = self.query_one("#annotate-log", DataTable)
        rubric = self.annotator.rubric
        if rubric is None:
            return
        cells = [event.item_id]
        labels = multi_labels(rubric, event.labels)  # a set per multi-label dimension
        for dim in rubric.dimensions:
            label = labels.get(dim.name)
            cells += ["-", ""] if label is None else [shown(label.value), f"{label.prob:.2f}"]
        log.add_row(*(Text(c, no_wrap=True, end="") for c in cells))  # data, not markup
        if log.row_count > LOG_ROWS:
            log.remove_row(next(iter(log.rows)))
        log.move_cursor(row=log.row_count - 1, animate=False)

    def _set_state(self, state: str, text: str) -> None:
        self.state = state
        widget = self.query_one("#annotate-state", Static)
        widget.update(text)
        widget.set_class(state == "error", "-error")

    def _stats(self, text: str) -> None:
        self.query_one("#annotate-stats", Static).update(text)

    def focus_default(self) -> None:
        focus_now(self.query_one("#annotate-log", DataTable))
