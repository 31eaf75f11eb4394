"""What an annotate job is, once: the spec every driver runs, and what they all say about it.

`annotator annotate` builds one `JobSpec` from its command line and hands it to the driver it
chose: one process (`job.Job.open`), worker processes (`workers.run_workers`), a Ray cluster
(`cluster.annotate_command`); the app builds one where it starts a job
(`tui.annotation.AnnotationRunner`). Every driver, and the app's Project tab, finds the rubric
with `resolve_rubric`; the command's drivers print their first lines with `start_lines`, so
they choose and say the same. No model is loaded here (a Ray driver may be a small machine).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from annotator.calibration.readout import Readout
from annotator.errors import AnnotatorError
from annotator.inference.backend import EngineSettings
from annotator.modelfile import ModelInfo, default_model_path
from annotator.rubric import Rubric, load_rubric

if TYPE_CHECKING:
    from annotator.calibration.heads import Head

DEFAULT_TIE_MARGIN = 0.1

Say = Callable[[str], object]
"""Prints one status line (the CLI: to stderr)."""

Advance = Callable[..., object]
"""Moves a progress bar: `advance(steps=1, info="")`."""


class Progress(Protocol):
    """A progress bar factory like `annotator.console.progress`: `total` items (None: not known
    yet, as for a streamed file), `what` they are; entered, it yields the bar's `Advance`."""

    def __call__(
        self, total: int | None, what: str, *, rate_unit: str | None = None
    ) -> AbstractContextManager[Advance]: ...


@dataclass(frozen=True)
class JobSpec:
    """One annotate job, as the user asked for it: built once from the command line (or the
    app's launch) and handed unchanged to whichever driver runs it. Picklable, so worker
    processes and Ray get the same spec."""

    data: Path
    """The data file (.csv, .tsv, .jsonl; Parquet too with --ray)."""
    project: Path
    """The project file (SQLite): created if missing, resumed if it exists."""
    rubric_path: Path | None = None
    """A rubric TOML; None: the model's rubric, else the project's (`resolve_rubric`)."""
    model: Path | None = None
    """A GGUF model or LoRA adapter file; None: the embedded default model."""
    id_col: str = "id"
    """The column holding item ids (else the row number)."""
    id_col_given: bool = False
    """Whether the user named `id_col` (then a file without that column is an error)."""
    settings: EngineSettings = field(default_factory=EngineSettings)
    """The engine's settings; n_threads is per process (workers split it, Ray per actor)."""
    tie_margin: float = DEFAULT_TIE_MARGIN
    """Flag a label whose margin is below this (a near tie)."""
    base: Path | None = None
    """The base GGUF an adapter `model` runs on; None: the embedded default model."""
    readout: Readout | None = None
    """How labels are read from the distributions; None: the default (`--rule auto`)."""

    def __post_init__(self) -> None:
        # Callers outside the CLI (scripts, tests) may pass strings: the fields hold Paths.
        for name in ("data", "project", "rubric_path", "model", "base"):
            if isinstance(value := getattr(self, name), str) and value:
                object.__setattr__(self, name, Path(value))

    def model_path(self) -> Path:
        """The model file to run (the default model is assembled on first use)."""
        return self.model if self.model else default_model_path()


def file_head(model: ModelInfo, rubric: Rubric, readout: Readout | None) -> Head | None:
    """The calibration head the model file carries, checked against `rubric` (None: it carries
    none), unless `readout` says not to apply it (`annotate --no-head`): then it is not read."""
    return model.head(rubric) if readout is None or readout.model_head else None


NO_RUBRIC = "the model carries no rubric; pass --rubric RUBRIC.toml"


class NoRubric(AnnotatorError):
    """Neither a rubric file, nor the model, nor the project gives a rubric."""

    def __init__(self, model: ModelInfo | None):
        self.model = model
        super().__init__(
            f"{model.path}: {NO_RUBRIC}"
            if model is not None
            else "no rubric: pass --rubric RUBRIC.toml or a model that carries one"
        )


def resolve_rubric(
    rubric_path: str | Path | None,
    model: ModelInfo | None,
    project: Callable[[], Rubric | None] = lambda: None,
) -> Rubric:
    """The rubric a job labels with: the rubric file if given, else the one the model carries,
    else the project's (`project()`, asked only then: reading it may open the project file).
    Raises the rubric file's AnnotatorError, or NoRubric when none of the three has one."""
    if rubric_path:
        return load_rubric(rubric_path)
    if model is not None and model.rubric is not None:
        return model.rubric
    if (bound := project()) is not None:
        return bound
    raise NoRubric(model)


def model_line(model: ModelInfo, backend: str, reason: str) -> str:
    """Which model runs where, and why there (`backend_choice`'s reason)."""
    return f"model {model.path.name} ({model.quantization}) on {backend.upper()}: {reason}"


def start_lines(
    where: str, rubric: Rubric, run_id: int, resumed: bool, head_dims: Iterable[str] | None = None
) -> list[str]:
    """The lines a driver prints once its run is found or started: `where` the model runs
    (`model_line`, or the Ray cluster's actors and nodes), the rubric and run, and the
    dimensions a calibration head in the model file labels (None: it carries none)."""
    lines = [
        where,
        f"rubric {rubric.name!r} {rubric.hash[:12]}; run {run_id}"
        + (" (resumed)" if resumed else ""),
    ]
    if head_dims is not None:
        lines.append(f"calibration head from the model file on {', '.join(sorted(head_dims))}")
    return lines
