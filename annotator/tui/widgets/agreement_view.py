"""Agreement: Krippendorff's alpha (model vs reviewer) per dimension, and where they differ.

The numbers come from `annotator.project.reviews.agreement_report` with the CLI's defaults (1000
bootstrap resamples, seed 0), so they equal `annotator agree` on the same project. They are
computed in a worker thread (the bootstrap takes a moment) with its own store connection, and
recomputed whenever a review is saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from annotator.agreement import verdict
from annotator.errors import AnnotatorError
from annotator.project.reviews import UNBIASED_QUEUES, agreement_report
from annotator.project.store import Store
from annotator.tui import formatting as fmt
from annotator.tui.confusion import Confusion, confusions
from annotator.tui.queues import HARD
from annotator.tui.widgets.confusion_view import confusion_lines

if TYPE_CHECKING:
    from annotator.tui.app import AnnotatorApp

VERDICT_STYLE = {
    "reliable": "bold $text-success",
    "tentative": "bold $text-warning",
    "unreliable": "bold $text-error",
    "undefined": "$text-muted",
}
COLUMNS = (
    ("dimension", 16),
    ("coders", 18),
    ("n", 4),
    ("alpha", 7),
    ("95% CI", 17),
    ("verdict", 10),
)


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


def _cell(text: str, width: int) -> str:
    return (text if len(text) <= width else text[: width - 1] + "…").ljust(width)


class AgreementView(VerticalScroll, can_focus=True):
    DEFAULT_CSS = """
    AgreementView { padding: 0 1; }
    AgreementView #agree-table, AgreementView #agree-confusion { height: auto; }
    AgreementView #agree-confusion { margin-top: 1; }
    """

    def __init__(self, bootstrap: int = 1000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.report: dict | None = None  # what is on screen (tests compare it with the CLI)
        self.pairs: list[Confusion] = []
        # Threads cannot be stopped: a slow older computation must not overwrite a newer one.
        self._generation = 0

    @property
    def annotator(self) -> AnnotatorApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static("", id="agree-table")
        yield Static("", id="agree-confusion")

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
        self.query_one("#agree-table", Static).update(Content(text))
        self.query_one("#agree-confusion", Static).update("")

    def _show(self, report: dict, pairs: list[Confusion], hard: int) -> None:
        self.report, self.pairs = report, pairs
        lines = [
            Content.assemble(
                ("Krippendorff's alpha", "bold"),
                f", run {report['run']}, {report['bootstrap']} bootstrap resamples",
            ),
            Content.styled(
                f"audit sample and imported reviews only; {hard} hardest-first item(s) not counted",
                "$text-muted",
            ),
        ]
        if not report["reviewers"]:
            lines.append(
                Content("\nNo audit reviews yet: review the audit sample in the Review tab (r).")
            )
            self.query_one("#agree-table", Static).update(Content("\n").join(lines))
            self.query_one("#agree-confusion", Static).update("")
            return
        lines.append(
            Content.styled(" ".join(_cell(name, w) for name, w in COLUMNS), "bold underline")
        )
        for dim in report["dimensions"]:
            for comp in dim["comparisons"]:
                lines.append(self._row(dim["dimension"], comp))
        for dim in report["dimensions"]:
            for comp in dim["comparisons"]:
                if comp["note"]:
                    lines.append(
                        Content.styled(
                            f"{dim['dimension']}, {' vs '.join(comp['coders'])}: {comp['note']}",
                            "$text-muted",
                        )
                    )
        lines.append(
            Content.styled(
                "≥ 0.800 reliable · ≥ 0.667 tentative · below: unreliable", "$text-muted"
            )
        )
        self.query_one("#agree-table", Static).update(Content("\n").join(lines))
        visual: list[Content] = []
        for confusion in pairs:
            visual += confusion_lines(confusion)
        self.query_one("#agree-confusion", Static).update(Content("\n").join(visual))

    def _row(self, dimension: str, comp: dict) -> Content:
        low, high = comp["ci95"]
        interval = "-" if low is None else f"[{low:.3f}, {high:.3f}]"
        word = verdict(comp["alpha"])
        widths = [w for _, w in COLUMNS][:5]  # the verdict is added after, in colour
        cells = [
            dimension,
            " vs ".join(comp["coders"]),
            str(comp["n"]),
            fmt.alpha(comp["alpha"]),
            interval,
        ]
        texts = [_cell(text, width) + " " for text, width in zip(cells, widths, strict=True)]
        # The alpha and its verdict carry the colour: green, yellow, red against 0.8 / 0.667.
        return Content.assemble(
            *texts[:3], (texts[3], VERDICT_STYLE[word]), texts[4], (word, VERDICT_STYLE[word])
        )
