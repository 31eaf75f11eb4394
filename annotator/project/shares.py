"""Field laptops: split a job into shares, merge the shares' projects back into one.

`split` writes, per share, a project file that holds the share's items (with their row
numbers in the original file, so a merged project lists items in the original order), the
rubric and the sha256 of the model every laptop must use, and a data file with the same items
for `annotator annotate`. `merge` copies runs, items, labels, skipped rows and reviews from
share projects into one project. Nothing is overwritten silently:

- projects with another rubric hash or another model sha256 are refused before anything is
  written, in one line naming the file;
- a run whose key (model, rubric, engine settings, readout: not the machine, see
  `run_keys.run_key`) matches a run already in the target joins it, whatever backend, versions
  or content-free priors each laptop had; those are recorded per share in `run_machines`
  (source: the share's file name); an item that run already labelled differently is kept
  in a run of its own ("kept by run"), and one labelled identically (the same share merged
  twice) is not copied again;
- reviews keep their reviewer and queue; where the same reviewer left two different reviews
  of an item in the same queue, the later one is kept (as a re-review would), and counted.

Tables are copied column by column as the target has them (PRAGMA table_info), so columns
that later migrations add come along without changes here.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from annotator.data import Item, data_format, read_items, write_rows
from annotator.errors import AnnotatorError
from annotator.project.store import Store
from annotator.rubric import Rubric, load_rubric

SHARE = "share-{k}"


# -- split ------------------------------------------------------------------------------------


@dataclass
class Share:
    project: Path
    data: Path
    items: int


@dataclass
class SplitReport:
    shares: list[Share]
    rubric: Rubric
    model_sha256: str
    not_shared: int = 0  # rows of DATA that cannot be labelled (in no share)


def split(
    source: str | Path,
    parts: int,
    out: str | Path,
    *,
    rubric_path: str | Path | None = None,
    model: str | Path | None = None,
    id_col: str = "id",
    id_col_given: bool = False,
) -> SplitReport:
    """Split a data file or a project into `parts` shares of consecutive items in `out`."""
    from annotator.modelfile import default_model_path, sha256_file

    source, out = Path(source), Path(out)
    if parts < 2:
        raise AnnotatorError(f"--parts: {parts}; a split needs at least 2 parts")
    model_path = Path(model) if model else None
    not_shared = 0
    if source.suffix.lower() == ".db":
        if not source.is_file():
            raise AnnotatorError(f"{source}: project file not found")
        with Store(source) as store:
            rubric = store.rubric()
            if rubric is None:
                raise AnnotatorError(f"{source}: project has no rubric yet (annotate first)")
            if rubric_path and load_rubric(rubric_path).hash != rubric.hash:
                raise AnnotatorError(f"{rubric_path}: not the rubric of {source}")
            items = store.items()
            sha = store.fixed_model_sha256() or (
                store.runs()[-1].model_sha256 if store.runs() else None
            )
        fmt = ".csv"
        if model_path is not None:
            sha = sha256_file(model_path)
        elif sha is None:
            sha = sha256_file(default_model_path())
    else:
        model_path = model_path or default_model_path()
        rubric = load_rubric(rubric_path) if rubric_path else carried_rubric(model_path)
        _, items, skipped = read_items(
            source, [i.column for i in rubric.inputs], id_col, id_col_given
        )
        not_shared = len(skipped)
        sha = sha256_file(model_path)
        fmt = source.suffix.lower()
        data_format(source)
    if len(items) < parts:
        raise AnnotatorError(f"{source}: {len(items)} items cannot make {parts} shares")
    out.mkdir(parents=True, exist_ok=True)
    shares = []
    size, extra = divmod(len(items), parts)
    start = 0
    for k in range(1, parts + 1):
        chunk = items[start : start + size + (k <= extra)]
        start += len(chunk)
        name = SHARE.format(k=k)
        project, data = out / f"{name}.db", out / f"{name}{fmt}"
        for path in (project, data):
            if path.exists():
                raise AnnotatorError(f"{path}: already exists; split into an empty folder")
        _write_share(project, data, rubric, sha, chunk)
        shares.append(Share(project, data, len(chunk)))
    return SplitReport(shares, rubric, sha, not_shared)


def carried_rubric(model: Path) -> Rubric:
    from annotator.modelfile import model_info_from_metadata, read_adapter_metadata, read_model_info

    try:
        info = read_model_info(model)
    except AnnotatorError:
        metadata = read_adapter_metadata(model)
        if metadata is None:
            raise
        info = model_info_from_metadata(model, metadata)
    if info.rubric is None:
        raise AnnotatorError(f"{model}: the model carries no rubric; pass --rubric RUBRIC.toml")
    return info.rubric


def _write_share(project: Path, data: Path, rubric: Rubric, sha: str, items: list[Item]) -> None:
    columns = ["id", *(i.column for i in rubric.inputs)]
    # Data for `annotate` on the laptop, not a spreadsheet: every cell exactly as read.
    write_rows(
        data, columns, ({"id": i.id, **i.fields} for i in items), private=True, raw_cells=True
    )
    with Store(project) as store:
        store.bind_rubric(rubric)
        store.fix_model_sha256(sha)
        store.add_items(items)  # their original rows: annotating the share keeps them


# -- merge ------------------------------------------------------------------------------------


@dataclass
class MergeReport:
    sources: int = 0
    runs_new: int = 0
    runs_joined: int = 0
    labels: int = 0
    labels_already: int = 0  # identical labels already in the target run
    kept_by_run: dict[int, int] = field(default_factory=dict)  # run id -> labels kept there
    skipped: int = 0
    reviews: int = 0
    reviews_replaced: int = 0  # same reviewer, item, dimension and queue: the later one kept
    items: int = 0
    # Runs the merge wrote to that now hold labels from more than one machine (backend,
    # versions or priors): run id -> the distinct backends among them.
    machines: dict[int, list[str]] = field(default_factory=dict)


def merge(sources: list[str | Path], into: str | Path) -> MergeReport:
    """Merge the share projects `sources` into the project `into` (created if missing)."""
    into = Path(into)
    sources = [Path(s) for s in sources]
    if not sources:
        raise AnnotatorError("merge: no project files given")
    for path in sources:
        if not path.is_file():
            raise AnnotatorError(f"{path}: project file not found")
        if into.exists() and path.resolve() == into.resolve():
            raise AnnotatorError(f"{path}: is the target project itself")
    report = MergeReport(sources=len(sources))
    with tempfile.TemporaryDirectory(prefix="annotator-merge-") as tmp, Store(into) as target:
        # Each source is copied (SQLite's backup) and the copy opened as a project, which
        # brings it to this version's schema without writing to the laptop's file.
        copies = [_copy(path, Path(tmp) / f"{n}.db") for n, path in enumerate(sources)]
        rubric, model_sha = _reference(target)
        for path, copy in zip(sources, copies, strict=True):
            rubric, model_sha = _check(path, copy, rubric, model_sha)
        touched: set[int] = set()
        for path, copy in zip(sources, copies, strict=True):
            touched |= _merge_one(target, path, copy, rubric, report)
        for run_id in sorted(touched):
            machines = target.run_machines(run_id)
            if len({json.dumps(facts, sort_keys=True) for _, facts in machines}) > 1:
                report.machines[run_id] = sorted({str(f.get("backend")) for _, f in machines})
        for copy in copies:
            copy.close()
    return report


def _copy(path: Path, to: Path) -> Store:
    try:
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        dst = sqlite3.connect(to)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
    except sqlite3.DatabaseError as exc:
        raise AnnotatorError(f"{path}: not a project file ({exc})") from exc
    return Store(to)


def _reference(target: Store) -> tuple[Rubric | None, str | None]:
    shas = {run.model_sha256 for run in target.runs()}
    sha = target.fixed_model_sha256() or (shas.pop() if len(shas) == 1 else None)
    return target.rubric(), sha


def _check(
    path: Path, copy: Store, rubric: Rubric | None, model_sha: str | None
) -> tuple[Rubric, str | None]:
    theirs = copy.rubric()
    if theirs is None:
        raise AnnotatorError(f"{path}: project has no rubric; nothing to merge")
    if rubric is not None and theirs.hash != rubric.hash:
        raise AnnotatorError(
            f"{path}: rubric {theirs.name!r} ({theirs.hash[:12]}) is not the "
            f"merged project's {rubric.name!r} ({rubric.hash[:12]}); not merged"
        )
    for sha in [copy.fixed_model_sha256(), *(run.model_sha256 for run in copy.runs())]:
        if sha is None:
            continue
        if model_sha is not None and sha != model_sha:
            raise AnnotatorError(
                f"{path}: model sha256 {sha[:12]} is not the merged project's "
                f"{model_sha[:12]}; not merged"
            )
        model_sha = sha
    return theirs, model_sha


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _merge_one(
    target: Store, path: Path, copy: Store, rubric: Rubric, report: MergeReport
) -> set[int]:
    """One source, in one transaction: all of it or nothing. Returns the target's runs it
    wrote to."""
    src = copy.db
    with target.transaction() as db:
        if db.execute("SELECT 1 FROM project WHERE key = 'rubric'").fetchone() is None:
            db.execute("INSERT INTO project VALUES ('rubric', ?)", (rubric.canonical_json(),))
        # Items: the same id must hold the same text, or labels would move to another text.
        clashes = 0
        for item_id, row, fields in src.execute("SELECT id, row, fields FROM items"):
            mine = db.execute("SELECT fields FROM items WHERE id = ?", (item_id,)).fetchone()
            if mine is None:
                db.execute(
                    "INSERT INTO items (id, row, fields) VALUES (?, ?, ?)", (item_id, row, fields)
                )
                report.items += 1
            elif mine[0] != fields:
                clashes += 1
        if clashes:
            raise AnnotatorError(
                f"{path}: {clashes} item id(s) hold other text than in {target.path}; not merged"
            )

        run_cols = [c for c in _columns(db, "runs") if c != "id" and c in _columns(src, "runs")]
        ann_cols = [c for c in _columns(db, "annotations") if c in _columns(src, "annotations")]
        runs = {}  # source run id -> target run id
        kept: dict[int, int] = {}  # source run id -> run holding labels that differ
        for source_run in src.execute(
            f"SELECT id, {', '.join(run_cols)} FROM runs ORDER BY id"
        ).fetchall():
            values = dict(zip(run_cols, source_run[1:], strict=True))
            # The latest run with the key, as `annotate` resumes it.
            found = db.execute(
                "SELECT id FROM runs WHERE run_key = ? ORDER BY id DESC LIMIT 1",
                (values["run_key"],),
            ).fetchone()
            if found:
                runs[source_run[0]] = found[0]
                report.runs_joined += 1
            else:
                runs[source_run[0]] = _insert_run(db, run_cols, values)
                report.runs_new += 1
        select = f"SELECT {', '.join(ann_cols)} FROM annotations ORDER BY run_id, item_id"
        for row in src.execute(select).fetchall():
            values = dict(zip(ann_cols, row, strict=True))
            source_run, values["run_id"] = values["run_id"], runs[values["run_id"]]
            mine = db.execute(
                "SELECT labels FROM annotations WHERE run_id = ? AND item_id = ?",
                (values["run_id"], values["item_id"]),
            ).fetchone()
            if mine is not None and mine[0] == values["labels"]:
                report.labels_already += 1
                continue
            if mine is not None:
                # Labelled differently in this run elsewhere: both are kept, each in its run.
                if source_run not in kept:
                    kept[source_run] = _kept_run(db, src, run_cols, source_run, path)
                values["run_id"] = kept[source_run]
                again = db.execute(
                    "SELECT labels FROM annotations WHERE run_id = ? AND item_id = ?",
                    (values["run_id"], values["item_id"]),
                ).fetchone()
                if again is not None and again[0] == values["labels"]:
                    report.labels_already += 1  # this source was merged before
                    continue
                report.kept_by_run[kept[source_run]] = (
                    report.kept_by_run.get(kept[source_run], 0) + 1
                )
            _insert(db, "annotations", values, "OR IGNORE")
            report.labels += 1
        # Each machine that labelled in a source run, under the share's name (or, for a
        # project that was itself merged, the name it was recorded under there).
        for run_id, source, facts, at in src.execute(
            "SELECT run_id, source, facts, recorded_at FROM run_machines"
        ).fetchall():
            for mine in {runs[run_id], kept.get(run_id, runs[run_id])}:
                db.execute(
                    "INSERT OR IGNORE INTO run_machines VALUES (?, ?, ?, ?)",
                    (mine, source or path.name, facts, at),
                )
        for run_id, row, item_id, reason in src.execute(
            "SELECT run_id, row, item_id, reason FROM skipped"
        ):
            report.skipped += db.execute(
                "INSERT OR IGNORE INTO skipped VALUES (?, ?, ?, ?)",
                (runs[run_id], row, item_id, reason),
            ).rowcount
        rev_cols = [c for c in _columns(db, "reviews") if c in _columns(src, "reviews")]
        for row in src.execute(f"SELECT {', '.join(rev_cols)} FROM reviews").fetchall():
            values = dict(zip(rev_cols, row, strict=True))
            mine = db.execute(
                "SELECT value, created_at FROM reviews WHERE item_id = ? AND"
                " dimension = ? AND reviewer = ? AND queue = ?",
                (values["item_id"], values["dimension"], values["reviewer"], values["queue"]),
            ).fetchone()
            if mine is None:
                _insert(db, "reviews", values)
                report.reviews += 1
            elif mine[0] != values["value"] and values["created_at"] > mine[1]:
                _insert(db, "reviews", values, "OR REPLACE")
                report.reviews_replaced += 1
    return set(runs.values()) | set(kept.values())


def _insert(db: sqlite3.Connection, table: str, values: dict, conflict: str = "") -> None:
    names = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    db.execute(f"INSERT {conflict} INTO {table} ({names}) VALUES ({marks})", tuple(values.values()))


def _insert_run(db: sqlite3.Connection, cols: list[str], values: dict) -> int:
    cursor = db.execute(
        f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
        tuple(values[c] for c in cols),
    )
    return int(cursor.lastrowid or 0)


def _kept_run(
    db: sqlite3.Connection, src: sqlite3.Connection, cols: list[str], source_run: int, path: Path
) -> int:
    """A run for labels that differ from those already in the matching target run: a copy of
    the source run whose key no `annotate` will resume, saying where it came from."""
    row = src.execute(f"SELECT {', '.join(cols)} FROM runs WHERE id = ?", (source_run,)).fetchone()
    values = dict(zip(cols, row, strict=True))
    settings = json.loads(values["settings"])
    settings["merged_from"] = {"project": str(path), "run": source_run}
    values["settings"] = json.dumps(settings, sort_keys=True)
    values["run_key"] = json.dumps(
        {"merged_from": str(path.resolve()), "run": source_run, "key": values["run_key"]},
        sort_keys=True,
    )
    found = db.execute("SELECT id FROM runs WHERE run_key = ?", (values["run_key"],)).fetchone()
    return int(found[0]) if found else _insert_run(db, cols, values)
