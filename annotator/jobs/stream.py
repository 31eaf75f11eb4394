"""The data file of an `annotate --ray` run (annotator/jobs/cluster.py), read as a stream:
CSV, TSV, JSONL or Parquet, a row at a time, with the same rules as `annotator.data.read_items`,
so a corpus larger than memory works. pyarrow is imported only for a Parquet file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from annotator.data import FORMATS, Item, Skipped, delimited_records, items_of, jsonl_records
from annotator.errors import AnnotatorError


def stream_items(
    path: Path, columns: list[str], id_col: str, id_col_given: bool
) -> Iterator[Item | Skipped]:
    """Items (or skipped rows, with reasons) of a CSV/TSV/JSONL/Parquet file, read as a stream
    with the same rules as `annotator.data.read_items`."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        header, records = _parquet_records(path)
    elif suffix in FORMATS:
        fmt = FORMATS[suffix]
        try:
            handle = (
                path.open("rb")
                if fmt == "jsonl"
                else path.open(encoding="utf-8", errors="surrogateescape", newline="")
            )
        except OSError as exc:
            raise AnnotatorError(f"{path}: cannot read data file ({exc.strerror or exc})") from exc
        if fmt == "jsonl":
            header, records = None, jsonl_records(_bom_free(handle))
        else:
            header, records = delimited_records(path, handle, "\t" if fmt == "tsv" else ",")
    else:
        raise AnnotatorError(f"{path}: unknown data format (use .csv, .tsv, .jsonl or .parquet)")
    if header is not None:
        missing = [c for c in columns if c not in header]
        if missing:
            raise AnnotatorError(
                f"{path}: missing column(s) {', '.join(map(repr, missing))} "
                f"(the header has {', '.join(map(repr, header))})"
            )
        if id_col_given and id_col not in header:
            raise AnnotatorError(f"{path}: no id column {id_col!r} in the header")
    use_row_numbers = header is not None and id_col not in header
    return items_of(records, columns, id_col, use_row_numbers, id_col_given)


def _bom_free(handle) -> Iterator[bytes]:
    first = True
    for line in handle:
        yield line.removeprefix(b"\xef\xbb\xbf") if first else line
        first = False


def _parquet_records(path: Path):
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise AnnotatorError(f"{path}: cannot read Parquet file ({exc})") from exc
    header = tuple(parquet.schema_arrow.names)

    def records():
        number = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                number += 1
                yield number, {k: v for k, v in record.items() if v is not None}

    return header, records()
