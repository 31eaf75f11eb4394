"""Label Studio's JSON: its export (tasks with annotations) in, its import shape (tasks with
predictions) out.

The shapes follow Label Studio's "Label Studio Task Format" and "Export annotations and data"
pages (labelstud.io/guide/task_format, guide/export): a JSON list of tasks, each with `id`,
`data` and `annotations`, whose `result` entries name the control (`from_name`), the object it
labels (`to_name`), the control's `type` and its `value`. A control is a dimension of the same
name: `choices` (one choice), `rating` (a number) or `taxonomy` (one path; its last element).

Every field not mapped to an item's inputs is kept: the task's other keys (annotations and
predictions included, verbatim) and the other `data` keys, and written back on export.
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
from annotator.rubric import Dimension, Rubric, Value

CONTROLS = ("choices", "rating", "taxonomy")


def read_tasks(path: Path, rubric: Rubric) -> Imported:
    tasks = json_list(path, "a Label Studio export (a JSON list of tasks)")
    found = Imported()
    first: dict[str, int] = {}
    for n, task in enumerate(tasks):
        where = f"{path} task[{n}]"
        if not isinstance(task, dict):
            raise AnnotatorError(f"{where}: not a JSON object")
        data = task.get("data")
        if not isinstance(data, dict):
            raise AnnotatorError(f"{where}.data: missing or not an object")
        # The task id; else `data.id`, where `write_tasks` puts an id that is no integer;
        # else the task's place in the file, as a data file's row number.
        if "id" in task:
            tid = item_id(task["id"], f"{where}.id")
        elif "id" in data:
            tid = item_id(data["id"], f"{where}.data.id")
        else:
            tid = str(n + 1)
        if tid in first:
            raise AnnotatorError(f"{where}.id: the same id as task[{first[tid]}]")
        first[tid] = n
        fields = {}
        for col in (f.column for f in rubric.inputs):
            if col not in data:
                raise AnnotatorError(f"{where}.data.{col}: missing (an input of the rubric)")
            fields[col] = input_text(data[col], f"{where}.data.{col}")
        found.items.append(Item(tid, n + 1, fields))
        extra = {k: v for k, v in task.items() if k not in ("id", "data")}
        extra["data"] = {k: v for k, v in data.items() if k not in fields}
        found.extras[tid] = extra
        _annotations(task.get("annotations", []), rubric, tid, f"{where}.annotations", found)
    return found


def _annotations(raw: object, rubric: Rubric, tid: str, where: str, found: Imported) -> None:
    if not isinstance(raw, list):
        raise AnnotatorError(f"{where}: not a list")
    for j, ann in enumerate(raw):
        at = f"{where}[{j}]"
        if not isinstance(ann, dict):
            raise AnnotatorError(f"{at}: not a JSON object")
        if ann.get("was_cancelled") is True:
            continue  # skipped by the annotator: no labels (kept with the task's fields)
        if "completed_by" not in ann:
            raise AnnotatorError(f"{at}.completed_by: missing (who annotated)")
        reviewer = reviewer_name(_user(ann["completed_by"]), f"{at}.completed_by")
        result = ann.get("result")
        if not isinstance(result, list):
            raise AnnotatorError(f"{at}.result: missing or not a list")
        rows = found.reviews.get(reviewer, [])
        for k, entry in enumerate(result):
            dim, value = _result_value(entry, rubric, f"{at}.result[{k}]")
            if any(r[0] == tid and r[1] == dim for r in rows):
                raise AnnotatorError(
                    f"{at}.result[{k}]: a second label of {dim!r} by {printable(reviewer, 60)!r} "
                    "for this task"
                )
            rows.append((tid, dim, value))
        if rows:  # an annotation with an empty result names no reviewer of anything
            found.reviews[reviewer] = rows


def _user(completed_by: object) -> object:
    """An export names the user by number; some versions write an object with an email."""
    if isinstance(completed_by, dict):
        return completed_by.get("email") or _user(completed_by.get("id"))
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        return f"labelstudio user {completed_by}"
    return completed_by if isinstance(completed_by, str) else ""


def _result_value(entry: object, rubric: Rubric, at: str) -> tuple[str, Value]:
    if not isinstance(entry, dict):
        raise AnnotatorError(f"{at}: not a JSON object")
    name = entry.get("from_name")
    try:
        dim = rubric.dimension(name) if isinstance(name, str) else None
    except KeyError:
        dim = None
    if dim is None:
        names = ", ".join(d.name for d in rubric.dimensions)
        raise AnnotatorError(
            f"{at}.from_name: {printable(name, 60)!r} is not a dimension of the rubric ({names})"
        )
    kind = entry.get("type")
    if kind not in CONTROLS:
        raise AnnotatorError(
            f"{at}.type: {printable(kind, 60)!r} is not one of {', '.join(CONTROLS)}"
        )
    value = entry.get("value")
    if not isinstance(value, dict) or kind not in value:
        raise AnnotatorError(f"{at}.value.{kind}: missing")
    raw = value[kind]
    if kind == "choices" or kind == "taxonomy":
        if not isinstance(raw, list) or len(raw) != 1:
            raise AnnotatorError(
                f"{at}.value.{kind}: one {kind[:-1]} expected (a dimension has one value)"
            )
        raw = raw[0]
        if kind == "taxonomy":  # a path from the root: the leaf is the value
            if not isinstance(raw, list) or not raw:
                raise AnnotatorError(f"{at}.value.taxonomy[0]: not a path (a list of names)")
            raw = raw[-1]
    return dim.name, parse(dim, raw, f"{at}.value.{kind}")


def _control(dim: Dimension) -> str:
    """Ratings are stars from 1: a scale of 1..N is a rating, anything else a choice."""
    if dim.scale != "nominal" and list(dim.values) == list(range(1, len(dim.values) + 1)):
        return "rating"
    return "choices"


def _to_name(kept: dict, dim: str, default: str) -> str:
    """The object the imported annotations labelled with this control, else the first input."""
    for ann in kept.get("annotations") or []:
        for entry in (ann.get("result") or []) if isinstance(ann, dict) else []:
            if isinstance(entry, dict) and entry.get("from_name") == dim:
                if isinstance(entry.get("to_name"), str):
                    return entry["to_name"]
    return default


def _is_number(text: str) -> bool:
    return text.isdigit() and str(int(text)) == text


def write_tasks(
    out: Path, rubric: Rubric, run: Run, items: list[Item], outputs: list[Output], kept: dict
) -> int:
    """Tasks for Label Studio's import: `data` (inputs and the kept data fields) and
    `predictions` (those kept, then this run's labels as one prediction)."""
    fields = {i.id: i.fields for i in items}
    default_target = rubric.inputs[0].column
    tasks = []
    for output in outputs:
        extra = dict(kept.get(output.item_id, {}))
        data = {**fields[output.item_id], **extra.pop("data", {})}
        # A task's `id` is an integer (guide/tasks): another id goes in `data`, which holds
        # any keys, and `read_tasks` finds it there.
        number = _is_number(output.item_id)
        if not number:
            data.setdefault("id", output.item_id)
        result = []
        for dim in rubric.dimensions:
            label = output.labels[dim.name]
            kind = _control(dim)
            result.append(
                {
                    # Label Studio wants ids that differ between a task's results
                    # (guide/predictions): the run and the dimension make one.
                    "id": f"annotator_run{run.id}_{dim.name}",
                    "from_name": dim.name,
                    "to_name": _to_name(extra, dim.name, default_target),
                    "type": kind,
                    "value": {kind: label.value if kind == "rating" else [str(label.value)]},
                }
            )
        probs = [output.labels[d.name].prob for d in rubric.dimensions]
        prediction = {
            "model_version": f"annotator run {run.id} ({run.model_sha256[:12]})",
            # The least sure dimension's probability: Label Studio sorts tasks by the score
            # to show the model's doubtful ones first.
            "score": round(min(probs), 6),
            "result": result,
        }
        task = {
            **({"id": int(output.item_id)} if number else {}),
            "data": data,
            **extra,
            "predictions": [*extra.get("predictions", []), prediction],
        }
        tasks.append(task)
    write_private(out, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
    return len(tasks)
