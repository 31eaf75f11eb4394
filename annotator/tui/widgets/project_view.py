"""The project at a glance: model, rubric, data file and counts, plus any problems found."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid, VerticalScroll
from textual.content import Content
from textual.widgets import Static

from annotator.tui import formatting as fmt
from annotator.tui.project import Counts, ProjectInfo

Line = tuple[str, Content | str]  # (label or "" for a continuation, value)


class ProjectView(VerticalScroll, can_focus=True):
    DEFAULT_CSS = """
    ProjectView { padding: 0 1; }
    ProjectView #project-errors {
        display: none; border: round $error; padding: 0 1; color: $text-error; height: auto;
    }
    ProjectView #project-errors.-shown { display: block; }
    /* Two columns: the values wrap under themselves, not under the labels. */
    ProjectView #project-body { grid-size: 2; grid-columns: 8 1fr; grid-rows: auto; height: auto; }
    ProjectView .label { text-style: bold; color: $text-accent; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="project-errors", markup=False)
        yield Grid(Static("Opening the project..."), id="project-body")

    def show(self, info: ProjectInfo, counts: Counts | None) -> None:
        problems = list(info.errors) + ([info.model_error] if info.model_error else [])
        errors = self.query_one("#project-errors", Static)
        errors.update("\n".join(problems))
        errors.set_class(bool(problems), "-shown")
        body = self.query_one("#project-body", Grid)
        body.remove_children()
        cells = []
        for label, value in self._lines(info, counts):
            cells += [Static(label, classes="label", markup=False), Static(value, markup=False)]
        body.mount_all(cells)

    def _lines(self, info: ProjectInfo, counts: Counts | None) -> list[Line]:
        lines: list[Line] = [
            (
                "Project",
                fmt.shown_path(info.project)
                + ("  (bundled GoEmotions sample)" if info.launch.demo else ""),
            )
        ]
        lines += self._model_lines(info)
        lines += self._rubric_lines(info)
        data = (
            "none (pass --data to annotate)"
            if info.data is None
            else (
                f"{fmt.shown_path(info.data)} · {info.data_items} items · "
                f"{info.data_skipped} rows unusable"
            )
        )
        lines.append(("Data", data))
        if counts is not None:
            run = f"run {counts.run_id}" if counts.run_id is not None else "no run yet"
            lines.append(
                (
                    "Counts",
                    f"{counts.items} items · {counts.annotated} annotated ({run})"
                    f" · {counts.skipped} skipped rows",
                )
            )
            lines.append(
                (
                    "",
                    f"{counts.reviewed} reviewed: audit sample {counts.audit}, "
                    f"hardest first {counts.hard}, teach {counts.teach}, "
                    f"imported {counts.imported}",
                )
            )
            if counts.readout:
                lines.append(("Labels", counts.readout))
        return lines

    def _model_lines(self, info: ProjectInfo) -> list[Line]:
        model = info.model
        if model is None:
            return [("Model", Content.styled("not loaded (see the message above)", "$text-error"))]
        context = f" · context {model.context_length}" if model.context_length else ""
        lines: list[Line] = [
            ("Model", Content.assemble((model.name, "bold"), f"  {model.path.name}")),
            ("", f"{fmt.size(model.size)} · {model.quantization} · {model.architecture}{context}"),
            ("sha256", f"{info.model_sha256}"),
        ]
        if model.is_adapter:
            lines.append(("", f"runs on the base model with sha256 {model.base_sha256}"))
        lines.append(
            (
                "",
                Content.assemble(
                    "backend ", (info.backend.upper(), "bold"), f": {info.backend_reason}"
                ),
            )
        )
        if model.description:
            lines.append(("About", model.description))
        if trained := fmt.training_summary(model.provenance):
            lines.append(("Trained", trained))
        if info.head:
            lines.append(("Calib.", info.head))
        return lines

    def _rubric_lines(self, info: ProjectInfo) -> list[Line]:
        rubric = info.rubric
        if rubric is None:
            return [("Rubric", Content.styled("none (see the message above)", "$text-error"))]
        lines: list[Line] = [
            (
                "Rubric",
                Content.assemble(
                    (rubric.name, "bold"),
                    f"  hash {rubric.hash[:12]} · {len(rubric.dimensions)} dimension(s)",
                ),
            )
        ]
        for dim in rubric.dimensions:
            values = ", ".join(str(v) for v in dim.values)
            lines.append(
                (
                    "",
                    Content.assemble(
                        (dim.name, "bold"), f"  {dim.scale} · {len(dim.values)} values: {values}"
                    ),
                )
            )
        return lines
