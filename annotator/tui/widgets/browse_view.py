"""Every item with each dimension's label and probability; sort, filter, open an item.

Rows are kept as plain data (`Row`) and the table is rebuilt from them when the sort or the
filter changes; results streaming in from a running annotation update cells in place, so the
table does not jump while the user reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Static

from annotator.jobs.spec import DEFAULT_TIE_MARGIN
from annotator.multilabel import multi_labels, shown
from annotator.project.store import Label
from annotator.tui.focus import focus_now
from annotator.tui.screens.item import ItemScreen

if TYPE_CHECKING:
    from annotator.tui.app import AnnotatorApp

SORTS = ("file order", "least sure first", "label", "id")
FILTERS = ("all", "low confidence", "reviewed", "not reviewed")
PREVIEW = 30


@dataclass
class Row:
    item_id: str
    position: int  # data file order
    preview: str
    labels: dict[str, Label] | None = None
    reviewed: bool = False

    @property
    def margin(self) -> float | None:
        return (
            min((lab.margin for lab in self.labels.values()), default=None) if self.labels else None
        )


class BrowseView(Vertical):
    DEFAULT_CSS = """
    BrowseView #browse-status { height: 1; background: $panel; padding: 0 1; }
    BrowseView #browse-label { display: none; }
    BrowseView #browse-label.-shown { display: block; }
    BrowseView DataTable { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "cycle_sort", "Sort"),
        Binding("f", "cycle_filter", "Filter"),
        Binding("slash", "label_filter", "Label"),
        Binding("minus", "threshold(-0.05)", "Less", show=False),
        Binding("plus,equals_sign", "threshold(0.05)", "More", show=False),
    ]

    def __init__(self, tie_margin: float = DEFAULT_TIE_MARGIN, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows: dict[str, Row] = {}
        self.sort = SORTS[0]
        self.filter = FILTERS[0]
        self.label_query = ""
        self.threshold = tie_margin

    @property
    def annotator(self) -> AnnotatorApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static("", id="browse-status", markup=False)
        yield Input(
            placeholder="label filter: joy, or emotion=joy (enter applies, esc closes)",
            id="browse-label",
        )
        table: DataTable = DataTable(id="browse-table", cursor_type="row", zebra_stripes=True)
        yield table

    @property
    def table(self) -> DataTable:
        return self.query_one("#browse-table", DataTable)

    # -- data -------------------------------------------------------------------------------

    def reload(self) -> None:
        """Read items, the current run's labels and reviews from the store."""
        store, rubric = self.annotator.store, self.annotator.rubric
        self.rows = {}
        if store is not None and rubric is not None:
            first = rubric.inputs[0].column
            for position, item in enumerate(store.items()):
                text = " ".join(item.fields.get(first, "").split())
                self.rows[item.id] = Row(item.id, position, text[:PREVIEW])
            if self.annotator.run_id is not None:
                for item_id, labels, _ in store.annotations(self.annotator.run_id):
                    if item_id in self.rows:
                        self.rows[item_id].labels = multi_labels(rubric, labels)
            for item_id in {r[0] for r in store.reviews()}:
                if item_id in self.rows:
                    self.rows[item_id].reviewed = True
        self.rebuild()

    def set_labels(self, item_id: str, labels: dict[str, Label]) -> None:
        row = self.rows.get(item_id)
        if row is None:
            return
        row.labels = multi_labels(self.annotator.rubric, labels)  # a set per multi-label dim
        self._update_row(row)

    def set_reviewed(self, item_id: str) -> None:
        row = self.rows.get(item_id)
        if row is not None and not row.reviewed:
            row.reviewed = True
            self._update_row(row)

    # -- table ------------------------------------------------------------------------------

    def rebuild(self) -> None:
        table = self.table
        cursor_key = self._cursor_key()
        table.clear(columns=True)
        rubric = self.annotator.rubric
        if rubric is None:
            self._status()
            return
        table.add_column("id", key="id")
        for dim in rubric.dimensions:
            # Fixed widths: cells filled in later by a running annotation must fit.
            width = max(len(dim.name), *(len(str(v)) for v in dim.values))
            table.add_column(dim.name, key=dim.name, width=width)
            table.add_column("p", key=f"{dim.name}:p", width=4)
        table.add_column("margin", key="margin", width=6)  # the least sure dimension's
        table.add_column("rev", key="rev", width=3)
        table.add_column(Text(rubric.inputs[0].label.lower()), key="text")  # Text: not markup
        for row in self._visible():
            table.add_row(*self._cells(row), key=row.item_id)
        if cursor_key is not None and cursor_key in table.rows:
            table.move_cursor(row=table.get_row_index(cursor_key), animate=False)
        self._status()

    def _update_row(self, row: Row) -> None:
        table = self.table
        if row.item_id not in table.rows:
            return  # filtered out: shown (or not) at the next rebuild
        rubric = self.annotator.rubric
        assert rubric is not None
        keys = (
            ["id"]
            + [k for d in rubric.dimensions for k in (d.name, f"{d.name}:p")]
            + ["margin", "rev", "text"]
        )
        for key, cell in zip(keys, self._cells(row), strict=True):
            table.update_cell(row.item_id, key, cell)
        self._status()

    def _cells(self, row: Row) -> list[Text]:
        """As `Text`: DataTable reads a str cell as markup, and ids, values and item text are
        data (an id `[/x]` would stop the app)."""
        rubric = self.annotator.rubric
        assert rubric is not None
        cells = [row.item_id]
        for dim in rubric.dimensions:
            label = (row.labels or {}).get(dim.name)
            cells += ["·", ""] if label is None else [shown(label.value), f"{label.prob:.2f}"]
        margin = "" if row.margin is None else f"{row.margin:.2f}"
        return [
            Text(c, no_wrap=True, end="")
            for c in (*cells, margin, "✓" if row.reviewed else "", row.preview)
        ]

    def _visible(self) -> list[Row]:
        rows = [r for r in self.rows.values() if self._keep(r)]
        if self.sort == "least sure first":
            rows.sort(key=lambda r: (r.margin is None, r.margin or 0.0, r.position))
        elif self.sort == "label":
            rows.sort(key=lambda r: (r.labels is None, self._label_key(r), r.position))
        elif self.sort == "id":
            rows.sort(key=lambda r: r.item_id)
        else:
            rows.sort(key=lambda r: r.position)
        return rows

    def _label_key(self, row: Row) -> tuple:
        rubric = self.annotator.rubric
        assert rubric is not None
        # Rubric value order, so ordinal scales sort low to high; a set by its values' order.
        return tuple(_value_key(d, (row.labels or {}).get(d.name)) for d in rubric.dimensions)

    def _keep(self, row: Row) -> bool:
        if self.filter == "low confidence" and (row.margin is None or row.margin >= self.threshold):
            return False
        if self.filter == "reviewed" and not row.reviewed:
            return False
        if self.filter == "not reviewed" and row.reviewed:
            return False
        if self.label_query:
            return self._matches_label(row)
        return True

    def _matches_label(self, row: Row) -> bool:
        if not row.labels:
            return False
        wanted = self.label_query.casefold()
        dim_name, _, value = wanted.rpartition("=")
        for name, label in row.labels.items():
            values = label.value if isinstance(label.value, tuple | list) else [label.value]
            if (not dim_name or name.casefold() == dim_name.strip()) and value.strip() in {
                str(v).casefold() for v in values
            }:
                return True  # a set matches any of its values
        return False

    def _cursor_key(self) -> str | None:
        table = self.table
        if table.row_count == 0:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # no valid cursor (empty or rebuilt table)
            return None

    def _status(self) -> None:
        shown = self.table.row_count
        filt = self.filter
        if filt == "low confidence":
            filt = f"low confidence (margin < {self.threshold:.2f})"
        if self.label_query:
            filt += f" · label {self.label_query}"
        self.query_one("#browse-status", Static).update(
            f"{shown} of {len(self.rows)} items · sort: {self.sort} · filter: {filt}"
        )

    # -- actions ----------------------------------------------------------------------------

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.rebuild()

    def action_cycle_filter(self) -> None:
        self.filter = FILTERS[(FILTERS.index(self.filter) + 1) % len(FILTERS)]
        self.rebuild()

    def action_threshold(self, step: float) -> None:
        self.threshold = round(min(1.0, max(0.05, self.threshold + step)), 2)
        self.filter = "low confidence"
        self.rebuild()

    def action_label_filter(self) -> None:
        box = self.query_one("#browse-label", Input)
        box.add_class("-shown")
        box.value = self.label_query
        focus_now(box)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.label_query = event.value.strip()
        self._close_label_box()
        self.rebuild()

    def on_key(self, event) -> None:
        if event.key == "escape" and self.query_one("#browse-label", Input).has_focus:
            event.stop()
            self._close_label_box()

    def _close_label_box(self) -> None:
        self.query_one("#browse-label", Input).remove_class("-shown")
        focus_now(self.table)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        item_id = event.row_key.value
        if item_id is not None and item_id in self.rows:
            self.app.push_screen(ItemScreen(item_id))

    def focus_default(self) -> None:
        focus_now(self.table)


def _value_key(dim, label: Label | None) -> tuple[int, ...]:
    """A label's place in the rubric's value order; a set's, its values' places in order."""
    if label is None:
        return (-1,)
    if dim.multi:
        return tuple(dim.values.index(v) for v in dim.parse_value(list(label.value)))
    return (dim.values.index(label.value),)
