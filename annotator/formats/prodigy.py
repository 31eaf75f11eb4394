"""Prodigy's JSONL: answered `textcat` and `choice` tasks in (as `prodigy db-out` writes
them), `choice` tasks with the model's label pre-selected out (as a Prodigy stream reads them).

The shapes follow Prodigy's documentation (prodi.gy/docs/api-interfaces, "Annotation
interfaces": `text`, `meta`, and the `answer` accept/reject/ignore every annotated task gains;
classification: `label`; choice: `options` [{id, text}] and `accept` [ids]) and the lines
`db-out` writes (`_input_hash`, `_task_hash`, `_annotator_id` and `_session_id` naming the
annotator). A line labels one dimension: the rubric's only one, or the one named. A textcat
`label` or a choice option id is that dimension's value; a rejected or ignored task, or a
choice accepted with no option chosen, gives no label.

The item id is `meta.id`, else `_input_hash`. Input text comes from the key named like the
rubric's input column, else (one input) from `text`. Every line's other fields are kept, per
item, and the first line's non-annotation fields are written back on export.
"""

from __future__ import annotations

from pathlib import Path

from annotator.data import Item, jsonl_records, write_rows
from annotator.errors import AnnotatorError, printable
from annotator.formats import Imported, input_text, item_id, parse, read_file, reviewer_name
from annotator.project.store import Output
from annotator.rubric import Dimension, Rubric

ANSWERS = ("accept", "reject", "ignore")
# One annotator's answer to a task, not the task: not written back with the model's answer.
_ANSWER_KEYS = {"answer", "accept", "label", "options", "_annotator_id", "_session_id",
                "_timestamp", "_task_hash"}  # fmt: skip


def dimension_of(rubric: Rubric, name: str | None) -> Dimension:
    if name is not None:
        try:
            return rubric.dimension(name)
        except KeyError:
            names = ", ".join(d.name for d in rubric.dimensions)
            raise AnnotatorError(
                f"--dimension: {printable(name, 60)!r} is not a dimension of the rubric ({names})"
            ) from None
    if len(rubric.dimensions) != 1:
        raise AnnotatorError(
            f"a Prodigy line labels one dimension and the rubric has {len(rubric.dimensions)}: "
            "name one with --dimension"
        )
    return rubric.dimensions[0]


def read_lines(path: Path, rubric: Rubric, dimension: str | None = None) -> Imported:
    dim = dimension_of(rubric, dimension)
    raw = read_file(path)
    found = Imported()
    fields_of: dict[str, dict[str, str]] = {}
    for n, record in jsonl_records(raw.removeprefix(b"\xef\xbb\xbf").split(b"\n")):
        where = f"{path} line {n}"
        if isinstance(record, str):
            raise AnnotatorError(f"{where}: {record}")
        tid = _id(record, where)
        fields = _fields(record, rubric, where)
        if tid not in fields_of:
            fields_of[tid] = fields
            found.items.append(Item(tid, n, fields))
        elif fields_of[tid] != fields:
            raise AnnotatorError(f"{where}: the same item id as an earlier line, with other text")
        found.extras.setdefault(tid, {"lines": []})["lines"].append(
            {k: v for k, v in record.items() if k not in fields and k != "text"}
        )
        answer = record.get("answer")
        if answer is None:
            continue  # a task not yet answered: the item only
        if answer not in ANSWERS:
            raise AnnotatorError(
                f"{where}.answer: {printable(answer, 60)!r} is not one of {', '.join(ANSWERS)}"
            )
        if answer != "accept" or record.get("accept") == []:
            continue  # rejected, ignored, or accepted with no option chosen: no value
        value = parse(dim, *_raw_value(record, where))
        who = "_annotator_id" if "_annotator_id" in record else "_session_id"
        if who not in record:
            raise AnnotatorError(f"{where}._annotator_id: missing (who answered)")
        reviewer = reviewer_name(record[who], f"{where}.{who}")
        rows = found.reviews.setdefault(reviewer, [])
        if any(r[0] == tid for r in rows):
            raise AnnotatorError(
                f"{where}: a second answer by {printable(reviewer, 60)!r} for this item"
            )
        rows.append((tid, dim.name, value))
    if not found.items:
        raise AnnotatorError(f"{path}: no tasks")
    return found


def _id(record: dict, where: str) -> str:
    meta = record.get("meta")
    if isinstance(meta, dict) and "id" in meta:
        return item_id(meta["id"], f"{where}.meta.id")
    if "_input_hash" in record:
        return item_id(record["_input_hash"], f"{where}._input_hash")
    raise AnnotatorError(f"{where}.meta.id: missing, and no _input_hash to identify the item")


def _fields(record: dict, rubric: Rubric, where: str) -> dict[str, str]:
    columns = [f.column for f in rubric.inputs]
    fields = {}
    for col in columns:
        key = col if col in record or len(columns) > 1 else "text"
        if key not in record:
            raise AnnotatorError(f"{where}.{key}: missing (an input of the rubric)")
        fields[col] = input_text(record[key], f"{where}.{key}")
    return fields


def _raw_value(record: dict, where: str) -> tuple[object, str]:
    if "accept" in record:  # a choice task: the ids of the options chosen
        chosen = record["accept"]
        if not isinstance(chosen, list) or len(chosen) != 1:
            raise AnnotatorError(
                f"{where}.accept: one option id expected (a dimension has one value)"
            )
        return chosen[0], f"{where}.accept"
    if "label" in record:  # a textcat task: the label, accepted
        return record["label"], f"{where}.label"
    raise AnnotatorError(f"{where}.label: missing (no label or accept to read a value from)")


def write_lines(
    out: Path, rubric: Rubric, dim: Dimension, items: list[Item], outputs: list[Output], kept: dict
) -> int:
    """One `choice` task per item with the run's label pre-selected: its inputs (`text` the
    first one), `meta` with the item id and the label's probability, the dimension's values as
    `options` and the label in `accept`. No `answer`: the model's label is a suggestion for an
    annotator (`db-in` marks every task accepted by default if they go straight in)."""
    fields = {i.id: i.fields for i in items}
    options = [{"id": v, "text": str(v)} for v in dim.values]
    lines = []
    for output in outputs:
        inputs = fields[output.item_id]
        first = (kept.get(output.item_id) or {"lines": [{}]})["lines"][0]
        task = {k: v for k, v in first.items() if k not in _ANSWER_KEYS}
        meta = task.pop("meta", None)
        label = output.labels[dim.name]
        lines.append(
            {
                "text": inputs[rubric.inputs[0].column],
                **inputs,
                **task,
                "meta": {
                    **(meta if isinstance(meta, dict) else {}),
                    "id": output.item_id,
                    "score": round(label.prob, 6),
                },
                "options": options,
                "accept": [label.value],
            }
        )
    # JSONL rows are written as they are, atomically and readable by the owner only.
    write_rows(out, [], lines, private=True)
    return len(lines)
