"""Data files (CSV, TSV, JSONL) to items. No row is dropped silently.

A row that cannot be annotated (a missing input column, an empty text, bytes that are not UTF-8,
an id seen before) becomes a `Skipped` record with its row number and the reason; the caller
stores and counts it. Problems with the file as a whole (unreadable, empty, no header, a required
column absent from the header) raise `AnnotatorError` with the file name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from annotator.errors import AnnotatorError, printable
from annotator.jsonin import NotJSON, parse_json

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
csv.field_size_limit(64 * 1024 * 1024)
# A cell starting with one of these is a formula to a spreadsheet (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A plain number ("-1", "+0.5", "-2e-3") is left alone: a spreadsheet reads it as the same
# number, and an ordinal label of -1 must come back as -1 for `train --data`.
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Item:
    id: str
    row: int  # 1-based data row (header excluded; JSONL: line number)
    fields: dict[str, str]


@dataclass(frozen=True)
class Skipped:
    row: int
    id: str | None
    reason: str


@dataclass(frozen=True)
class Rows:
    """A data file read as raw records: (row number, record or the reason it is unreadable)."""

    path: Path
    sha256: str
    columns: tuple[str, ...] | None  # None for JSONL: keys vary by line
    records: list[tuple[int, dict[str, object] | str]]


def data_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AnnotatorError(f"{path}: unknown data format (use .csv, .tsv or .jsonl)")
    return fmt


def write_rows(
    out: Path,
    columns: Sequence[str],
    rows: Iterable[Mapping[str, object]],
    *,
    csv_cell: Callable[[object], object] = lambda v: "" if v is None else v,
    private: bool = False,
    raw_cells: bool = False,
) -> None:
    """Write `rows` as CSV, TSV or JSONL (by `out`'s suffix, as `read_rows` reads them).

    Atomic: written and synced under a temporary name beside `out`, then renamed, so a
    reader never sees half a file and a failure leaves no partial file. CSV/TSV cells go
    through `csv_cell`, then `safe_cell` (unless `raw_cells`): these files are opened in
    spreadsheets. JSONL lines are the rows as they are. `private`: readable by the owner
    only (files holding item text); otherwise the umask decides, as for any new file.
    """
    fmt = data_format(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    except OSError as exc:
        raise AnnotatorError(f"{out}: cannot write ({exc.strerror or exc})") from exc
    try:
        with open(fd, "w", encoding="utf-8", newline="") as handle:
            if fmt == "jsonl":
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                writer = csv.writer(
                    handle, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n"
                )
                # With "\n" line ends the csv module leaves a lone CR in a cell unquoted, and
                # a reader takes it for a line end: a row holding one is written all quoted.
                quoted = csv.writer(
                    handle,
                    delimiter="\t" if fmt == "tsv" else ",",
                    lineterminator="\n",
                    quoting=csv.QUOTE_ALL,
                )
                # The header is the rubric's column names, which `train --data` must find.
                writer.writerow(columns)
                cell = csv_cell if raw_cells else lambda v: safe_cell(csv_cell(v))
                for row in rows:
                    cells = [cell(row[c]) for c in columns]
                    cr = any(isinstance(v, str) and "\r" in v for v in cells)
                    (quoted if cr else writer).writerow(cells)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AnnotatorError(f"{out}: cannot write ({exc.strerror or exc})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def safe_cell(value: object) -> object:
    """`value` as a spreadsheet shows it as text: a cell that would start a formula gets a
    leading single quote (OWASP's advice); plain numbers and everything else are unchanged."""
    if (
        isinstance(value, str)
        and value.startswith(FORMULA_STARTS)
        and not _PLAIN_NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value


def read_rows(path: str | Path) -> Rows:
    path = Path(path)
    fmt = data_format(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AnnotatorError(f"{path}: cannot read data file ({exc.strerror or exc})") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise AnnotatorError(f"{path}: data file is empty")
    if fmt == "jsonl":
        return Rows(path, digest, None, _jsonl_records(raw))
    columns, records = _delimited_records(path, raw, "\t" if fmt == "tsv" else ",")
    return Rows(path, digest, columns, records)


def _jsonl_records(raw: bytes) -> list[tuple[int, dict[str, object] | str]]:
    return list(jsonl_records(raw.split(b"\n")))


def jsonl_records(lines: Iterable[bytes]) -> Iterator[tuple[int, dict[str, object] | str]]:
    """JSONL lines (bytes) to records, one at a time (also for files read as a stream)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            yield number, "undecodable bytes (not UTF-8)"
            continue
        try:
            record = parse_json(text)
        except NotJSON as exc:
            yield number, str(exc)
            continue
        if not isinstance(record, dict):
            yield number, "not a JSON object"
            continue
        # "\ud800" is valid JSON but not text: SQLite and every writer refuse it later.
        try:
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            yield number, "holds an escaped lone surrogate (not Unicode text)"
            continue
        yield number, record


def _delimited_records(
    path: Path, raw: bytes, delimiter: str
) -> tuple[tuple[str, ...], list[tuple[int, dict[str, object] | str]]]:
    # surrogateescape keeps bad bytes as lone surrogates, so one bad row is found and
    # skipped instead of failing the whole file.
    text = raw.decode("utf-8", errors="surrogateescape")
    header, records = delimited_records(path, io.StringIO(text, newline=""), delimiter)
    return header, list(records)


def delimited_records(
    path: Path, lines: Iterable[str], delimiter: str
) -> tuple[tuple[str, ...], Iterator[tuple[int, dict[str, object] | str]]]:
    """The header and the records of CSV/TSV text lines, the records one at a time (also for
    files read as a stream: open them with errors="surrogateescape", newline="")."""
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise AnnotatorError(f"{path}: cannot parse header ({exc})") from exc
    except StopIteration:
        raise AnnotatorError(f"{path}: data file is empty") from None
    if _has_surrogates(header):
        raise AnnotatorError(f"{path}: header has undecodable bytes (not UTF-8)")
    header = [h.strip() for h in header]
    if header:
        header[0] = header[0].removeprefix("\ufeff")  # a BOM, when read as a stream
    _refuse_repeated_columns(path, header)

    def records() -> Iterator[tuple[int, dict[str, object] | str]]:
        number = 0
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                number += 1
                yield number, f"cannot parse row ({exc})"
                continue
            number += 1
            if not values or all(not v.strip() for v in values):
                number -= 1  # blank lines are not rows
                continue
            if _has_surrogates(values):
                yield number, "undecodable bytes (not UTF-8)"
                continue
            if len(values) > len(header):
                yield number, f"{len(values)} fields but the header has {len(header)}"
                continue
            yield number, dict(zip(header, values, strict=False))

    return tuple(header), records()


def _refuse_repeated_columns(path: Path, header: Sequence[str]) -> None:
    """A name twice in the header: a row would keep only its last column's cell. Unnamed
    columns (a spreadsheet's empty trailing cells) name nothing and may repeat."""
    positions: dict[str, list[int]] = {}
    for number, name in enumerate(header, start=1):
        if name:
            positions.setdefault(name, []).append(number)
    repeated = [(name, numbers) for name, numbers in positions.items() if len(numbers) > 1]
    if not repeated:
        return

    def columns(numbers: list[int]) -> str:
        return f"columns {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}"

    if len(repeated) == 1:
        name, numbers = repeated[0]
        times = "twice" if len(numbers) == 2 else f"{len(numbers)} times"
        raise AnnotatorError(
            f"{path}: column {printable(name, 60)!r} appears {times} in the "
            f"header ({columns(numbers)})"
        )
    shown = ", ".join(
        f"{printable(name, 60)!r} ({columns(numbers)})" for name, numbers in repeated[:5]
    )
    more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
    raise AnnotatorError(f"{path}: columns appear more than once in the header: {shown}{more}")


def _has_surrogates(values: Sequence[str]) -> bool:
    return any(any("\udc80" <= ch <= "\udcff" for ch in v) for v in values)


def read_items(
    path: str | Path,
    columns: Sequence[str],
    id_col: str = "id",
    id_col_given: bool = False,
    repeats: bool = False,
) -> tuple[Rows, list[Item], list[Skipped]]:
    """Items carrying `columns`, in file order, and the rows that were skipped, with reasons.

    The id comes from `id_col`; when the file has no such column the 1-based row number is
    the id (unless the user named the column explicitly, which makes its absence an error).
    With `repeats`, a repeated id is kept as another row of the same item (several raters)
    instead of being skipped.
    """
    rows = read_rows(path)
    if rows.columns is not None:
        missing = [c for c in columns if c not in rows.columns]
        if missing:
            raise AnnotatorError(
                f"{rows.path}: missing column(s) {', '.join(map(repr, missing))} "
                f"(the header has {', '.join(map(repr, rows.columns))})"
            )
        if id_col_given and id_col not in rows.columns:
            raise AnnotatorError(f"{rows.path}: no id column {id_col!r} in the header")
    use_row_numbers = rows.columns is not None and id_col not in rows.columns

    items: list[Item] = []
    skipped: list[Skipped] = []
    for found in items_of(
        rows.records, columns, id_col, use_row_numbers, id_col_given, repeats=repeats
    ):
        (items if isinstance(found, Item) else skipped).append(found)
    return rows, items, skipped


def items_of(
    records: Iterable[tuple[int, dict[str, object] | str]],
    columns: Sequence[str],
    id_col: str,
    use_row_numbers: bool,
    id_col_given: bool,
    repeats: bool = False,
) -> Iterator[Item | Skipped]:
    """Records to items, or to skipped rows with the reason, one at a time in file order
    (`repeats`: a repeated id is yielded again rather than skipped)."""
    first_row: dict[str, int] = {}
    for number, record in records:
        if isinstance(record, str):
            yield Skipped(number, None, record)
            continue
        item_id, problem = _item_id(record, id_col, number, use_row_numbers, id_col_given)
        if problem:
            yield Skipped(number, item_id, problem)
            continue
        assert item_id is not None
        fields, problem = _fields(record, columns)
        if problem:
            yield Skipped(number, item_id, problem)
            continue
        if item_id in first_row and not repeats:
            yield Skipped(number, item_id, f"duplicate id (first at row {first_row[item_id]})")
            continue
        first_row[item_id] = number
        yield Item(item_id, number, fields)


def _item_id(
    record: dict[str, object], id_col: str, number: int, use_row_numbers: bool, required: bool
) -> tuple[str | None, str | None]:
    if use_row_numbers:
        return str(number), None
    if id_col not in record:
        if required:
            return None, f"missing id column {id_col!r}"
        return str(number), None
    raw = record[id_col]
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return None, f"id in {id_col!r} must be text or an integer"
    item_id = str(raw).strip()
    if not item_id:
        return None, f"empty id in {id_col!r}"
    if len(item_id) > 200 or not item_id.isprintable():
        return None, "id longer than 200 characters or not printable"
    return item_id, None


def _fields(record: dict[str, object], columns: Sequence[str]) -> tuple[dict[str, str], str | None]:
    fields: dict[str, str] = {}
    for column in columns:
        if column not in record:
            return fields, f"missing input column {column!r}"
        value = record[column]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return fields, f"column {column!r} is not text"
        text = str(value)
        if not text.strip():
            return fields, f"empty text in column {column!r}"
        fields[column] = text
    return fields, None
