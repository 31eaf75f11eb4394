"""`k` on the Agreement tab: calibrate from the app (the same code as `annotator calibrate`).

Heads are fitted on the project's audit and imported reviews in a worker thread; a progress
line says which step is running and esc cancels (before the new run is stored, nothing is
written). Then one row per dimension: the current run's alpha against the reviewers and the
new run's out-of-fold alpha, each with its 95% interval (tui/calibration.py). `a` makes the
new run the project's current run (kept in the project file: the app, `results` and `agree`
then show its labels); `w` writes the file `calibrate --out` writes and shows its sha256.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static
from textual.worker import get_current_worker

from annotator.errors import AnnotatorError
from annotator.tui.calibration import (
    Outcome,
    calibrate_project,
    check_out_path,
    comparison,
    write_file,
)
from annotator.tui.screens.ask import AskScreen
from annotator.tui.screens.dimension import cells_content

if TYPE_CHECKING:
    from annotator.tui.app import AnnotatorApp


class Cancelled(Exception):
    """Raised in the worker at its next step once esc was pressed."""


class CalibrateScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    CalibrateScreen { align: center middle; }
    CalibrateScreen > VerticalScroll {
        width: 100%; height: 100%; border: round $accent; padding: 0 1; background: $surface;
    }
    CalibrateScreen Static { height: auto; }
    CalibrateScreen #calibrate-status { margin-top: 1; }
    CalibrateScreen #calibrate-keys { margin-top: 1; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close"),
        Binding("a", "adopt", "Adopt"),
        Binding("w", "write", "Write file"),
    ]

    def __init__(self, project: Path, run_id: int | None, bootstrap: int) -> None:
        super().__init__()
        self.project, self.run_id, self.bootstrap = project, run_id, bootstrap
        self.outcome: Outcome | None = None  # once calibrated (tests read it)
        self.status = ""  # the last line shown under the table (tests read it)
        self.adopted = False
        self._app: AnnotatorApp
        self.written: tuple[Path, str] | None = None  # the file `w` wrote, its sha256
        self._busy = False  # writing a file

    @property
    def annotator(self) -> AnnotatorApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "Calibrate from the reviews · esc cancels"
            yield Static("", id="calibrate-title")
            yield Static("", id="calibrate-table")
            yield Static("", id="calibrate-notes")
            yield Static("", id="calibrate-status")
            yield Static("", id="calibrate-keys")

    def on_mount(self) -> None:
        self._app = self.annotator  # a closed screen no longer reaches its app; threads do
        self._progress("starting")
        self._calibrate()

    # -- the worker -------------------------------------------------------------------------

    @work(thread=True, exit_on_error=False)
    def _calibrate(self) -> None:
        worker = get_current_worker()

        stored = False

        def tell(step: str) -> None:
            nonlocal stored
            stored = stored or step.startswith("alpha")  # the steps after storing the run
            if worker.is_cancelled:
                raise Cancelled()
            self._app.call_from_thread(self._progress, step)

        try:
            outcome = calibrate_project(self.project, self.run_id, self.bootstrap, tell)
        except Cancelled:
            self._tell_app(
                "calibration cancelled; "
                + (
                    "the new run was stored, the current run stays current"
                    if stored
                    else "nothing was stored"
                )
            )
            return
        except AnnotatorError as exc:
            self._from_thread(worker, self._failed, f"cannot calibrate: {exc}")
            return
        except Exception as exc:  # shown here, never as a traceback
            self._from_thread(
                worker, self._failed, f"calibration failed: {type(exc).__name__}: {exc}"
            )
            return
        if worker.is_cancelled:  # stored, not adopted: the current run stays
            self._tell_app(
                f"calibration cancelled; run {outcome.result.run_id} was stored but "
                f"run {outcome.result.parent} stays the current run"
            )
            return
        self._from_thread(worker, self._show, outcome)

    def _from_thread(self, worker, show, *args) -> None:
        if not worker.is_cancelled:
            self._app.call_from_thread(show, *args)

    def _tell_app(self, message: str) -> None:
        try:
            self._app.call_from_thread(self._app.notify, message, markup=False)
        except RuntimeError:  # the app has closed
            pass

    # -- showing ----------------------------------------------------------------------------

    def _set(self, part: str, content: Content | str) -> None:
        if not self.is_attached:  # closed (esc) while the worker was still telling
            return
        self.query_one(f"#calibrate-{part}", Static).update(
            content if isinstance(content, Content) else Content(content)
        )

    def _progress(self, step: str) -> None:
        self._set("title", Content.styled("Calibrating from the reviews...", "bold"))
        self._set_status(f"{step}...")
        self._set("keys", "esc: cancel (nothing is stored before the last step)")

    def _failed(self, message: str) -> None:
        self._set("title", "")
        self._set_status(message, error=True)
        self._set("keys", "esc: close")
        self.query_one(VerticalScroll).border_title = "Calibrate from the reviews · esc closes"

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status = text
        self._set("status", Content.styled(text, "$text-error" if error else ""))

    def _show(self, outcome: Outcome) -> None:
        self.outcome = outcome
        result = outcome.result
        self.query_one(VerticalScroll).border_title = "Calibrate from the reviews · esc closes"
        self._set(
            "title",
            Content("\n").join(
                [
                    Content.styled(
                        f"Run {result.run_id}: run {result.parent} read out again with heads "
                        "fitted on the reviews",
                        "bold",
                    ),
                    Content.styled(
                        f"mean alpha vs {len(outcome.new['reviewers'])} reviewer(s), 95% CI of "
                        f"{outcome.new['bootstrap']} resamples; run {result.run_id} out-of-fold",
                        "$text-muted",
                    ),
                ]
            ),
        )
        header, rows = comparison(outcome)
        self._set(
            "table",
            Content("\n").join(
                [Content.styled("".join(t for t, _ in header), "bold underline")]
                + [cells_content(row) for row in rows]
            ),
        )
        notes = [f"{name}: no head, {why}" for name, why in result.left_out.items()]
        self._set("notes", Content.styled("\n".join(notes), "$text-muted"))
        self._set_status(
            f"run {result.parent} is the current run; run {result.run_id} is stored beside it"
        )
        self._show_keys()

    def _show_keys(self) -> None:
        if self.outcome is None:
            return
        new = self.outcome.result.run_id
        adopt = "" if self.adopted else f"a: make run {new} current · "
        self._set("keys", f"{adopt}w: write the file (calibrate --out) · esc: close")

    # -- keys -------------------------------------------------------------------------------

    def action_close(self) -> None:
        self.workers.cancel_all()  # a calibration in flight stops at its next step
        self.dismiss(None)

    def action_adopt(self) -> None:
        store = self.annotator.store
        if self.outcome is None or self.adopted or store is None:
            return
        run_id = self.outcome.result.run_id
        try:
            store.adopt_run(run_id)
        except AnnotatorError as exc:
            self._set_status(f"cannot adopt run {run_id}: {exc}", error=True)
            return
        self.adopted = True
        self.annotator.show_run(run_id)
        self._set_status(f"run {run_id} is now the project's current run")
        self._show_keys()

    def action_write(self) -> None:
        if self.outcome is None or self._busy:
            return
        if self.outcome.result.head is None:
            self._set_status("no head was fitted: nothing to write", error=True)
            return
        run_id = self.outcome.result.run_id
        default = self.project.with_name(f"{self.project.stem}-run{run_id}.gguf")
        self.app.push_screen(
            AskScreen(
                f"Write run {run_id}'s heads into a model file",
                "annotate --model FILE labels new items as this run did; an existing "
                "file is never overwritten",
                _shown(default),
                check_out_path,
            ),
            self._write,
        )

    def _write(self, answer: str | None) -> None:
        if not answer or self.outcome is None:
            return
        self._busy = True
        self._set_status(f"writing {answer}...")
        self._write_file(Path(answer).expanduser(), self.outcome)

    @work(thread=True, exit_on_error=False, group="write")
    def _write_file(self, out: Path, outcome: Outcome) -> None:
        try:
            kind, size, sha = write_file(self.project, outcome.result.run_id, outcome, out)
        except AnnotatorError as exc:
            self._app.call_from_thread(self._written, None, str(exc))
        except Exception as exc:  # shown here, never as a traceback
            self._app.call_from_thread(
                self._written, None, f"writing failed: {type(exc).__name__}: {exc}"
            )
        else:
            shown = f"{size / 1e3:.0f} kB" if size < 1e6 else f"{size / 1e6:.1f} MB"
            self._app.call_from_thread(
                self._written, (out, sha), f"wrote {_shown(out)}, {kind} ({shown})\nsha256 {sha}"
            )

    def _written(self, written: tuple[Path, str] | None, message: str) -> None:
        self._busy = False
        if written is not None:
            self.written = written
        if not self.is_attached:  # closed while writing: the app says it
            self._app.notify(message, severity="error" if written is None else "information")
            return
        self._set_status(message, error=written is None)


def _shown(path: Path) -> str:
    """A path as typed in the app: relative to the working folder where it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
