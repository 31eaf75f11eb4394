"""Argilla's records as JSON: records with responses in, records with suggestions out.

The shape is Argilla 2's `Record.to_dict` / `Record.from_dict` (the SDK's records/_resource.py;
"Importing and exporting datasets and records" in its how-to guides): a JSON list of records,
each with `id`, `fields`, `metadata`, `suggestions` ({question: {value, score, agent}}),
`responses` ({question: [{value, user_id}, ...]}), `vectors` and `_server_id`. A question is the
dimension of the same name; a label or rating question's `value` is the dimension's value.

The record id is the item id, the rubric's input columns come from `fields`. A response whose
`status` is given and is not "submitted" (a draft, a discarded record) gives no label. Every
field not mapped is kept (other fields, metadata, vectors, suggestions, the responses as they
were) and written back on export, with this run's labels as suggestions.
"""

from __future__ import annotations

import json
from pathlib import Path

from annotator.data import Item
from annotator.errors import AnnotatorError, printable
from annotator.formats import (
    Imported,
    input_text,
    item_id,
    json_list,
    parse,
    reviewer_name,
    write_private,
)
from annotator.project.runs import Run
from annotator.project.store import Output
from annotator.rubric import Rubric


def read_records(path: Path, rubric: Rubric) -> Imported:
    records = json_list(path, "Argilla records (a JSON list of records)")
    found = Imported()
    first: dict[str, int] = {}
    for n, record in enumerate(records):
        where = f"{path} record[{n}]"
        if not isinstance(record, dict):
            raise AnnotatorError(f"{where}: not a JSON object")
        rid = item_id(record["id"], f"{where}.id") if record.get("id") is not None else str(n + 1)
        if rid in first:
            raise AnnotatorError(f"{where}.id: the same id as record[{first[rid]}]")
        first[rid] = n
        fields = record.get("fields")
        if not isinstance(fields, dict):
            raise AnnotatorError(f"{where}.fields: missing or not an object")
        inputs = {}
        for col in (f.column for f in rubric.inputs):
            if col not in fields:
                raise AnnotatorError(f"{where}.fields.{col}: missing (an input of the rubric)")
            inputs[col] = input_text(fields[col], f"{where}.fields.{col}")
        found.items.append(Item(rid, n + 1, inputs))
        extra = {k: v for k, v in record.items() if k not in ("id", "fields")}
        extra["fields"] = {k: v for k, v in fields.items() if k not in inputs}
        found.extras[rid] = extra
        _responses(record.get("responses") or {}, rubric, rid, f"{where}.responses", found)
    return found


def _responses(raw: object, rubric: Rubric, rid: str, where: str, found: Imported) -> None:
    if not isinstance(raw, dict):
        raise AnnotatorError(f"{where}: not an object of question: responses")
    for question, answers in raw.items():
        try:
            dim = rubric.dimension(question)
        except KeyError:
            names = ", ".join(d.name for d in rubric.dimensions)
            raise AnnotatorError(
                f"{where}: question {printable(question, 60)!r} is not a dimension of the "
                f"rubric ({names})"
            ) from None
        if not isinstance(answers, list):
            raise AnnotatorError(f"{where}.{question}: not a list of responses")
        for k, answer in enumerate(answers):
            at = f"{where}.{question}[{k}]"
            if not isinstance(answer, dict):
                raise AnnotatorError(f"{at}: not a JSON object")
            if answer.get("status", "submitted") != "submitted":
                continue  # a draft or a discarded record: no answer given
            if answer.get("user_id") is None:
                raise AnnotatorError(f"{at}.user_id: missing (who answered)")
            reviewer = reviewer_name(f"argilla user {answer['user_id']}", f"{at}.user_id")
            if "value" not in answer:
                raise AnnotatorError(f"{at}.value: missing")
            value = parse(dim, answer["value"], f"{at}.value")
            rows = found.reviews.setdefault(reviewer, [])
            if any(r[0] == rid and r[1] == dim.name for r in rows):
                raise AnnotatorError(f"{at}: a second response by this user to {dim.name!r}")
            rows.append((rid, dim.name, value))


def write_records(
    out: Path, rubric: Rubric, run: Run, items: list[Item], outputs: list[Output], kept: dict
) -> int:
    """Records for `Record.from_dict` / `dataset.records.log`: the kept fields, metadata,
    vectors and responses, and this run's labels as one suggestion per dimension."""
    fields = {i.id: i.fields for i in items}
    agent = f"annotator run {run.id} ({run.model_sha256[:12]})"
    records = []
    for output in outputs:
        extra = dict(kept.get(output.item_id, {}))
        suggestions = dict(extra.pop("suggestions", None) or {})
        for dim in rubric.dimensions:
            label = output.labels[dim.name]
            suggestions[dim.name] = {
                "value": label.value,
                "score": round(label.prob, 6),
                "agent": agent,
            }
        records.append(
            {
                "id": output.item_id,
                "fields": {**fields[output.item_id], **extra.pop("fields", {})},
                "metadata": extra.pop("metadata", None) or {},
                "suggestions": suggestions,
                "responses": extra.pop("responses", None) or {},
                "vectors": extra.pop("vectors", None) or {},
                **extra,
            }
        )
    write_private(out, json.dumps(records, ensure_ascii=False, indent=1) + "\n")
    return len(records)
