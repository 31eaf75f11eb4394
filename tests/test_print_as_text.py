"""Text from data (ids, values), reviewer names and rubric names reaches the terminal as
text: never as rich markup (`[/x]` would end the command in a MarkupError) or emoji codes.

Projects are built through the Store directly (no model is loaded)."""

from __future__ import annotations

from conftest import run_cli

from annotator.data import Item
from annotator.project.store import Label, Store
from annotator.rubric import rubric_from_dict

RUBRIC = rubric_from_dict(
    {
        "name": "[red]rubric[/red] :smile:",
        "instructions": "Label the note.",
        "inputs": [{"column": "text", "label": "NOTE [EN]"}],
        "dimensions": [
            {
                "name": "kind",
                "question": "Kind?",
                "scale": "nominal",
                "values": ["[bold]", "[/x]", ":thumbs_up:"],
            }
        ],
    },
    "test",
)
IDS = ["[/x]", "[bob]", ":smile:", "[link=file:///etc/passwd]y[/link]"]


def make_project(path):
    with Store(path) as store:
        store.bind_rubric(RUBRIC)
        store.add_items(
            [Item(i, n, {"text": f"note [/i] {n}"}) for n, i in enumerate(IDS, start=1)]
        )
        run_id, _ = store.find_or_start_run(
            model_path="m.gguf",
            model_sha256="0" * 64,
            rubric=RUBRIC,
            data_path="d.csv",
            data_sha256="0" * 64,
            settings={},
        )
        values = RUBRIC.dimensions[0].values
        for n, item_id in enumerate(IDS):
            store.save_annotation(
                run_id, item_id, {"kind": Label(values[n % 3], 0.9, 0.5)}, 5, 0, 0.01
            )
        store.save_reviews("[bob]", "audit", [(i, "kind", values[0]) for i in IDS])
    return path


def test_results_table_prints_ids_values_and_rubric_name_as_text(tmp_path):
    project = make_project(tmp_path / "p.db")
    done = run_cli("results", str(project), env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for text in [*IDS, *RUBRIC.dimensions[0].values, RUBRIC.name]:
        assert text in done.stdout, text


def test_agreement_table_prints_reviewer_and_rubric_name_as_text(tmp_path):
    project = make_project(tmp_path / "p.db")
    done = run_cli("agree", str(project), "--bootstrap", "0", "--pairs", env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "model vs [bob]" in done.stdout and RUBRIC.name in done.stdout


def test_the_app_shows_ids_values_texts_and_labels_as_text(tmp_path, monkeypatch):
    """Textual reads a str cell of a DataTable, a column label and a border title as markup."""
    import asyncio

    from helpers.tui import opened, text_of
    from textual.widgets import DataTable

    from annotator.tui.annotation import ItemDone
    from annotator.tui.app import make_app
    from annotator.tui.screens.item import ItemScreen
    from annotator.tui.widgets.annotate_view import AnnotateView
    from annotator.tui.widgets.browse_view import BrowseView

    project = make_project(tmp_path / "p.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # a crash report, if any

    async def run() -> None:
        app = make_app(project.name, reviewer="alice")
        async with app.run_test(size=(120, 30)) as pilot:
            await opened(pilot)
            await pilot.press("b")
            browse = app.main.query_one(BrowseView)
            await pilot.pause()
            table = browse.table
            assert table.row_count == len(IDS)
            cells = [str(c) for r in range(len(IDS)) for c in table.get_row_at(r)]
            assert set(IDS) <= set(cells) and "[/x]" in cells and "[bold]" in cells
            assert "note [/i] 1" in " ".join(cells)
            assert [str(c.label) for c in table.columns.values()][-1] == "note [en]"
            await pilot.press("enter")
            assert isinstance(app.screen, ItemScreen)
            assert "note [/i] 1" in text_of(app.screen)
            await pilot.press("escape")
            annotate = app.main.query_one(AnnotateView)
            log = annotate.query_one("#annotate-log", DataTable)
            before = log.row_count
            annotate._log(
                ItemDone(1, "[/x]", {"kind": Label("[/x]", 0.5, 0.1)}, 0, 1, 4, 1.0, None, 0)
            )
            assert log.row_count == before + 1
            assert [str(c) for c in log.get_row_at(log.row_count - 1)][:2] == ["[/x]", "[/x]"]
            await pilot.pause()

    asyncio.run(run())
