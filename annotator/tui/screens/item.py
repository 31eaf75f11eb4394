"""One item in full: every input's text, the model's answer per dimension, and its reviews."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from annotator.multilabel import multi_labels, shown

if TYPE_CHECKING:
    from annotator.tui.app import AnnotatorApp


class ItemScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    ItemScreen { align: center middle; }
    ItemScreen > VerticalScroll {
        width: 100%; height: 100%; border: round $accent; padding: 0 1; background: $surface;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, item_id: str) -> None:
        super().__init__()
        self.item_id = item_id

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = Content(f"item {self.item_id} · esc closes")  # not markup
            yield Static(self._content())

    def _content(self) -> Content:
        app: AnnotatorApp = self.app  # type: ignore[assignment]
        rubric, store, item = app.rubric, app.store, app.item(self.item_id)
        lines: list[Content] = []
        if item is not None:
            lines.append(Content.styled(f"row {item.row} of the data file", "$text-muted"))
        if rubric is None or store is None or item is None:
            return Content("\n").join([*lines, Content("This item is not in the project.")])
        for field in rubric.inputs:
            lines += [
                Content.styled(field.label, "bold $text-accent"),
                Content(item.fields.get(field.column, "").strip()),
                Content(""),
            ]
        labels = {}
        if app.run_id is not None:
            labels = next(
                (lab for i, lab, _ in store.annotations(app.run_id) if i == self.item_id), {}
            )
            labels = multi_labels(rubric, labels)  # a set per multi-label dimension
        lines.append(
            Content.styled(
                f"Model (run {app.run_id})" if labels else "Model: not annotated",
                "bold $text-accent",
            )
        )
        for dim in rubric.dimensions:
            label = labels.get(dim.name)
            if label is not None:
                lines.append(
                    Content.assemble(
                        f"  {dim.name}: ",
                        (shown(label.value), "bold"),
                        f"  p {label.prob:.3f} · margin {label.margin:.3f}",
                    )
                )
        reviews = [r for r in store.reviews() if r[0] == self.item_id]
        lines.append(Content.styled("Reviews" if reviews else "Reviews: none", "bold $text-accent"))
        for _item, dim_name, reviewer, value, queue in reviews:
            lines.append(
                Content.assemble(
                    f"  {dim_name}: ", (shown(value), "bold"), f"  by {reviewer} ({queue})"
                )
            )
        return Content("\n").join(lines)

    def action_close(self) -> None:
        self.dismiss(None)
