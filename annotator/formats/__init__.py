"""Other annotation tools' files in and out: Label Studio (`labelstudio`), Prodigy (`prodigy`),
Argilla (`argilla`).

Each format module reads a file into an `Imported` (items, reviewers' labels, and every field
it did not map, per item) checked against the rubric, and writes a run's labels in that tool's
import shape. What is shared lives here: storing an import through the same store calls as
`review import` (items, then reviews in the "import" queue), and keeping unmapped fields.

A file is checked whole before anything is stored: a record that does not fit the rubric
raises `AnnotatorError` naming the file, the record and the field, and the project is
unchanged. Unmapped fields are kept in the project table under `import/<format>/<item id>`
(a JSON object): no schema change, and the format's writer puts them back where they were.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from annotator.data import Item
from annotator.errors import AnnotatorError, printable
from annotator.jsonin import load_json
from annotator.project.reviews import check_reviewer
from annotator.project.store import Store
from annotator.rubric import Dimension, Rubric, Value

FORMATS = ("labelstudio", "prodigy", "argilla")
_EXTRA_KEY = "import/{format}/{item}"


@dataclass
class Imported:
    items: list[Item] = field(default_factory=list)
    # reviewer -> (item id, dimension, value) rows, as `Store.save_reviews` takes them
    reviews: dict[str, list[tuple[str, str, Value]]] = field(default_factory=dict)
    extras: dict[str, dict] = field(default_factory=dict)  # item id -> unmapped fields


@dataclass
class StoredImport:
    items: int
    labels: int
    reviewers: int


def read_file(path: Path) -> bytes:
    """The bytes of an import file, or one line saying why they cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AnnotatorError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def json_list(path: Path, what: str) -> list:
    """A JSON file that must hold a list (Label Studio tasks, Argilla records); `what` says
    what the file should have been when it is not one."""
    records = load_json(read_file(path), str(path))
    if not isinstance(records, list):
        raise AnnotatorError(f"{path}: not {what}")
    return records


def input_text(value: object, where: str) -> str:
    """An input field's text (numbers are read as text, as from a data file); refused else."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise AnnotatorError(f"{where}: must be text, not {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise AnnotatorError(f"{where}: empty text")
    return text


def item_id(value: object, where: str) -> str:
    """The same rule as a data file's id column (`annotator.data`)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise AnnotatorError(f"{where}: must be text or an integer")
    text = str(value).strip()
    if not text or len(text) > 200 or not text.isprintable():
        raise AnnotatorError(f"{where}: empty, longer than 200 characters or not printable")
    return text


def reviewer_name(value: object, where: str) -> str:
    name = str(value).strip()
    if (problem := check_reviewer(name)) is not None:
        raise AnnotatorError(f"{where}: {problem} (got {printable(name, 60)!r})")
    return name


def parse(dim: Dimension, raw: object, where: str) -> Value:
    try:
        return dim.parse_value(raw)
    except ValueError as exc:
        raise AnnotatorError(f"{where}: {exc}") from None


def store_import(
    store: Store, rubric: Rubric, fmt: str, found: Imported, source: Path
) -> StoredImport:
    """Store `found`: refused whole (nothing stored) when an item id is already in the project
    with other text; otherwise the items, the reviews ("import" queue) and the unmapped fields."""
    store.bind_rubric(rubric)
    stored = {i.id: i.fields for i in store.items()}
    for item in found.items:
        if item.id in stored and stored[item.id] != item.fields:
            # The same id with other text is another item: storing either would mislabel one.
            differ = [c for c in item.fields if stored[item.id].get(c) != item.fields[c]]
            raise AnnotatorError(
                f"{source}: the record with id {printable(item.id, 60)!r}: "
                f"{', '.join(differ) or 'its input columns'} not as the project holds that "
                "item; nothing imported"
            )
    # Fields kept by an earlier import of the same items stay: Prodigy's lines add up (one
    # file per dataset or annotator), Label Studio's task fields are replaced by the newer.
    before = kept_fields(store, fmt)
    for tid, extra in found.extras.items():
        old = before.get(tid, {})
        if "lines" in old and "lines" in extra:
            extra["lines"] = old["lines"] + [x for x in extra["lines"] if x not in old["lines"]]
        found.extras[tid] = {**old, **extra}
    store.add_items(found.items)
    labels = 0
    for reviewer, rows in found.reviews.items():
        labels += store.save_reviews(reviewer, "import", rows)
    with store.transaction() as db:
        db.executemany(
            "INSERT OR REPLACE INTO project VALUES (?, ?)",
            [
                (_EXTRA_KEY.format(format=fmt, item=i), json.dumps(extra, ensure_ascii=False))
                for i, extra in found.extras.items()
                if extra
            ],
        )
    return StoredImport(len(found.items), labels, len(found.reviews))


def kept_fields(store: Store, fmt: str) -> dict[str, dict]:
    """item id -> the fields an import in `fmt` did not map (empty for items without any)."""
    prefix = _EXTRA_KEY.format(format=fmt, item="")
    rows = store.db.execute(
        "SELECT key, value FROM project WHERE key >= ? AND key < ?", (prefix, prefix + "\U0010ffff")
    )
    return {key[len(prefix) :]: json.loads(value) for key, value in rows}


def write_private(out: Path, text: str) -> None:
    """Atomic and readable by the owner only (the file holds item text): written and synced
    under a temporary name beside `out`, then renamed, so a failure leaves no partial file."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AnnotatorError(f"{out}: cannot write ({exc.strerror or exc})") from exc
