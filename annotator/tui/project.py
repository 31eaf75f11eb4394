"""Opening a project: the model, rubric and data behind it, checked before anything is shown.

`load_project` runs in a worker thread (reading a model header and hashing it can take a
second; assembling the default model on first use, longer). It opens its own short-lived
`Store`, because a SQLite connection belongs to the thread that made it. Problems become
messages in `ProjectInfo.errors` (or `model_error`), never exceptions: the app shows them and
keeps whatever still works (an existing project can be browsed and reviewed without a model).
No Textual here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from annotator.calibration.calibrate import describe_head, describe_run
from annotator.data import read_items
from annotator.errors import AnnotatorError
from annotator.inference.backend import backend_choice
from annotator.jobs.spec import NO_RUBRIC, NoRubric, resolve_rubric
from annotator.modelfile import ModelInfo, default_model_path, read_model_info, sha256_file
from annotator.project.store import Store
from annotator.rubric import Rubric
from annotator.tui.launch import Launch


@dataclass
class ProjectInfo:
    launch: Launch
    model: ModelInfo | None = None
    model_sha256: str | None = None
    model_error: str | None = None
    backend: str = "?"
    backend_reason: str = ""
    head: str = ""  # the calibration head the model file carries, in one line
    rubric: Rubric | None = None
    data: Path | None = None
    data_items: int | None = None  # annotatable items in the data file
    data_skipped: int = 0  # rows of the data file that cannot be annotated
    errors: list[str] = field(default_factory=list)

    @property
    def project(self) -> Path:
        return self.launch.project

    @property
    def ready(self) -> bool:
        """The project file exists and has a rubric: it can be browsed and reviewed."""
        return self.rubric is not None and self.project.is_file()

    @property
    def can_annotate(self) -> bool:
        return (
            self.ready
            and self.model is not None
            and self.data is not None
            and self.data_items is not None
        )


@dataclass(frozen=True)
class Counts:
    run_id: int | None
    items: int
    annotated: int
    skipped: int
    reviewed: int  # items with at least one review, any queue
    audit: int
    hard: int
    imported: int
    readout: str = ""  # how the run's labels were read from the model (annotator/calibrate.py)
    teach: int = 0  # items reviewed in the teach queue


def load_project(launch: Launch) -> ProjectInfo:
    info = ProjectInfo(launch)
    project = launch.project
    existed = project.is_file()
    if not existed and launch.data is None:
        info.errors.append(f"{project}: project file not found; pass --data DATA to create it")
    store_rubric, last_model, last_data = None, None, None
    if existed:
        try:
            with Store(project) as store:
                store_rubric = store.rubric()
                runs = store.runs()
        except AnnotatorError as exc:
            info.errors.append(str(exc))
            return info
        if runs:
            last_model, last_data = Path(runs[-1].model_path), Path(runs[-1].data_path)

    _load_model(info, launch.model or (last_model if last_model and last_model.is_file() else None))
    rubric = _choose_rubric(info, launch, store_rubric)
    # The project's own rubric is what its annotations mean; show it even if the new one clashes.
    info.rubric = store_rubric or rubric
    if rubric is None:
        return info

    data = launch.data or (last_data if last_data and last_data.is_file() else None)
    items = None
    if data is not None:
        try:
            _, items, skipped = read_items(data, [i.column for i in rubric.inputs])
            info.data, info.data_items, info.data_skipped = data, len(items), len(skipped)
        except AnnotatorError as exc:
            info.errors.append(str(exc))
    if items is None and not existed:
        return info  # never leave an empty project file behind for a bad data file
    try:
        with Store(project) as store:
            store.bind_rubric(rubric)
            if items:
                store.add_items(items)  # conflicting ids are reported when annotating
    except AnnotatorError as exc:
        info.errors.append(str(exc))
        info.data = None  # annotating into a project with another rubric would fail anyway
    return info


def _load_model(info: ProjectInfo, path: Path | None) -> None:
    try:
        info.backend, info.backend_reason = backend_choice("auto")
        info.model = read_model_info(path or default_model_path())
        info.model_sha256 = sha256_file(info.model.path)
        if info.model.rubric is not None and (head := info.model.head(info.model.rubric)):
            info.head = describe_head(head)
    except AnnotatorError as exc:
        info.model, info.model_error = None, str(exc)
    except OSError as exc:
        info.model, info.model_error = None, f"{path}: cannot read model ({exc.strerror or exc})"


def _choose_rubric(info: ProjectInfo, launch: Launch, store_rubric: Rubric | None) -> Rubric | None:
    """As `annotator annotate` chooses (`resolve_rubric`): the rubric file, the model's, the
    project's. A problem is a message in `info.errors`, and no rubric."""
    try:
        return resolve_rubric(launch.rubric, info.model, lambda: store_rubric)
    except NoRubric as exc:
        if exc.model is not None:  # the Project tab names the model file by its name
            info.errors.append(f"{exc.model.path.name}: {NO_RUBRIC}")
        elif not info.errors:  # no model either: its error says why, else this does
            info.errors.append(str(exc))
    except AnnotatorError as exc:
        info.errors.append(str(exc))
    return None


def latest_run_id(store: Store) -> int | None:
    runs = store.runs()
    return runs[-1].id if runs else None


def counts(store: Store, run_id: int | None) -> Counts:
    items = len(store.item_ids())
    annotated = len(store.done_ids(run_id)) if run_id is not None else 0
    skipped = len(store.skipped(run_id)) if run_id is not None else 0
    by_queue: dict[str, set[str]] = {"audit": set(), "hard": set(), "import": set(), "teach": set()}
    reviewed: set[str] = set()
    for item_id, _dim, _reviewer, _value, queue in store.reviews():
        reviewed.add(item_id)
        by_queue.setdefault(queue, set()).add(item_id)
    readout = describe_run(store.run(run_id)) if run_id is not None else ""
    return Counts(
        run_id,
        items,
        annotated,
        skipped,
        len(reviewed),
        len(by_queue["audit"]),
        len(by_queue["hard"]),
        len(by_queue["import"]),
        readout,
        len(by_queue["teach"]),
    )
