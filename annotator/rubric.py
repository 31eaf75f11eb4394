"""Rubric files: what to show the model and which answers each dimension allows.

A rubric comes from a TOML file or from a model file's metadata. Both are untrusted: they are
parsed as data, every key is checked, sizes are bounded, and nothing in them is ever used as a
template or executed. Validation collects every problem and names the source and key of each.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotator.errors import AnnotatorError, printable
from annotator.jsonin import load_json

SCALES = ("nominal", "ordinal", "interval")
KINDS = ("single", "multi")  # one value per item, or any subset of the values (multi-label)
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_MAX_TEXT = 20_000  # instructions
_MAX_SHORT = 1_000  # questions, anchors, labels, values
_MAX_DIMENSIONS = 32
_MAX_VALUES = 200
_MAX_INPUTS = 16
_TOP_KEYS = {"name", "instructions", "inputs", "dimensions", "description"}
_INPUT_KEYS = {"column", "label"}
_DIMENSION_KEYS = {"name", "question", "scale", "values", "anchors", "kind", "min", "max"}
RESULT_COLUMNS = ("id", "truncated")  # the columns of `annotator results` that no dimension writes

Value = int | str | tuple[str, ...]  # a tuple: the chosen values of a multi-label dimension


@dataclass(frozen=True)
class InputField:
    column: str
    label: str


@dataclass(frozen=True)
class Dimension:
    name: str
    question: str
    scale: str
    values: tuple[Value, ...]
    anchors: tuple[tuple[str, str], ...] = ()
    kind: str = "single"  # "multi": a value is any subset of `values` (annotator/multilabel.py)
    min_count: int = 0  # multi: fewest values an item may have
    max_count: int | None = None  # multi: most values an item may have (None: all)
    origin: Dimension | None = None  # on the yes/no dimension of a multi one's value: that one

    @property
    def multi(self) -> bool:
        return self.kind == "multi"

    @property
    def parent(self) -> str:
        return "" if self.origin is None else self.origin.name

    def result_columns(self, with_probs: bool = False) -> list[str]:
        """Its columns in `annotator results`: value, probability and margin (`with_probs`:
        each value's probability too). Multi-label: the values joined by ";" and a 0/1
        column per value (`with_probs`: each value's probability of yes)."""
        if self.multi:
            cols = [self.name] + [f"{self.name}_{v}" for v in self.values]
            return cols + ([f"{self.name}_p_{v}" for v in self.values] if with_probs else [])
        cols = [self.name, f"{self.name}_p", f"{self.name}_margin"]
        return cols + ([f"{self.name}_p_{v}" for v in self.values] if with_probs else [])

    def parse_value(self, raw: object) -> Value:
        """The allowed value that `raw` (from a CSV cell or JSON) stands for; ValueError if none.
        Multi-label: a list, or text with the values joined by ";" ("" for none), as a tuple
        in rubric order."""
        if self.multi:
            return self._parse_set(raw)
        if self.scale == "nominal":
            text = str(raw).strip()
            if text in self.values:
                return text
        else:
            if isinstance(raw, bool):
                raise ValueError(raw)
            try:
                number = float(str(raw).strip())
            except ValueError:
                number = float("nan")
            if number.is_integer() and int(number) in self.values:
                return int(number)
        allowed = ", ".join(str(v) for v in self.values)
        raise ValueError(f"{raw!r} is not one of {allowed}")

    def _parse_set(self, raw: object) -> tuple[str, ...]:
        if isinstance(raw, list | tuple):
            parts = [str(p).strip() for p in raw]
        elif isinstance(raw, str):
            parts = [p.strip() for p in raw.split(";")] if raw.strip() else []
        else:
            raise ValueError(f"{raw!r} is not a list of values or values joined by ';'")
        unknown = [p for p in parts if p not in self.values]
        if unknown:
            allowed = ", ".join(str(v) for v in self.values)
            raise ValueError(f"{unknown[0]!r} is not one of {allowed}")
        if len(set(parts)) != len(parts):
            raise ValueError(f"{raw!r} names a value twice")
        top = len(self.values) if self.max_count is None else self.max_count
        if not self.min_count <= len(parts) <= top:
            raise ValueError(f"{raw!r} has {len(parts)} values; allowed {self.min_count} to {top}")
        return tuple(v for v in self.values if v in parts)


@dataclass(frozen=True)
class Rubric:
    name: str
    instructions: str
    inputs: tuple[InputField, ...]
    dimensions: tuple[Dimension, ...]
    description: str = ""

    def dimension(self, name: str) -> Dimension:
        for dim in self.dimensions:
            if dim.name == name:
                return dim
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "instructions": self.instructions,
            "inputs": [{"column": i.column, "label": i.label} for i in self.inputs],
            "dimensions": [
                {
                    "name": d.name,
                    "question": d.question,
                    "scale": d.scale,
                    "values": list(d.values),
                    **({"anchors": dict(d.anchors)} if d.anchors else {}),
                    **(_multi_keys(d) if d.multi else {}),
                }
                # The model's view (annotator/multilabel.py) writes the rubric it came from.
                for d in dict.fromkeys(d.origin or d for d in self.dimensions)
            ],
        }
        if self.description:
            data["description"] = self.description
        return data

    def canonical_json(self) -> str:
        """One stable serialization: the basis of the hash and of what a GGUF file carries."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


def _multi_keys(dim: Dimension) -> dict[str, Any]:
    """The keys only a multi-label dimension has (absent otherwise: older hashes hold)."""
    keys: dict[str, Any] = {"kind": "multi", "min": dim.min_count}
    return keys if dim.max_count is None else {**keys, "max": dim.max_count}


def load_rubric(path: str | Path) -> Rubric:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AnnotatorError(f"{path}: cannot read rubric ({exc.strerror or exc})") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise AnnotatorError(f"{path}: rubric is not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AnnotatorError(f"{path}: invalid TOML ({exc})") from exc
    except ValueError as exc:  # an integer longer than Python converts: not a TOMLDecodeError
        raise AnnotatorError(
            f"{path}: invalid TOML (holds a number of more than "
            f"{sys.get_int_max_str_digits()} digits)"
        ) from exc
    return rubric_from_dict(data, source=str(path))


def rubric_from_json(text: str, source: str) -> Rubric:
    """A rubric carried as JSON (GGUF metadata, the project store): same checks as a file."""
    if len(text) > 1_000_000:
        raise AnnotatorError(f"{source}: rubric is too large ({len(text)} characters)")
    return rubric_from_dict(load_json(text, f"{source}: rubric"), source=source)


def rubric_from_dict(data: object, source: str) -> Rubric:
    problems: list[str] = []

    def bad(key: str, why: str) -> None:
        problems.append(f"{key}: {why}")

    if not isinstance(data, dict):
        raise AnnotatorError(f"{source}: rubric must be a table of keys")
    for key in sorted(set(data) - _TOP_KEYS):
        bad(printable(key, 60), "unknown key")

    name = _text(data, "name", "name", bad, _MAX_SHORT, required=True)
    instructions = _text(data, "instructions", "instructions", bad, _MAX_TEXT, required=True)
    description = _text(data, "description", "description", bad, _MAX_TEXT, required=False)

    inputs = _inputs(data.get("inputs"), bad)
    dimensions = _dimensions(data.get("dimensions"), bad)

    if problems:
        shown = "; ".join(problems[:8])
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise AnnotatorError(f"{source}: invalid rubric: {shown}{more}")
    return Rubric(name, instructions, tuple(inputs), tuple(dimensions), description)


def _text(table: dict, key: str, where: str, bad, limit: int, required: bool) -> str:
    value = table.get(key)
    if value is None:
        if required:
            bad(where, "missing")
        return ""
    if not isinstance(value, str):
        bad(where, f"must be text, not {type(value).__name__}")
        return ""
    if required and not value.strip():
        bad(where, "must not be empty")
    if len(value) > limit:
        bad(where, f"longer than {limit} characters")
        return ""
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        bad(where, "contains control characters")
    return value


def _inputs(raw: object, bad) -> list[InputField]:
    if not isinstance(raw, list) or not raw:
        bad("inputs", "must be a non-empty list of [[inputs]] tables")
        return []
    if len(raw) > _MAX_INPUTS:
        bad("inputs", f"at most {_MAX_INPUTS} inputs")
        return []
    fields: list[InputField] = []
    for i, entry in enumerate(raw):
        where = f"inputs[{i}]"
        if not isinstance(entry, dict):
            bad(where, "must be a table with column and label")
            continue
        for key in sorted(set(entry) - _INPUT_KEYS):
            bad(f"{where}.{printable(key, 60)}", "unknown key")
        column = _text(entry, "column", f"{where}.column", bad, _MAX_SHORT, required=True)
        label = _text(entry, "label", f"{where}.label", bad, _MAX_SHORT, required=False) or column
        if "\n" in label or "\n" in column:
            bad(where, "column and label must be one line")
        if column and any(f.column == column for f in fields):
            bad(f"{where}.column", f"duplicate column {column!r}")
        fields.append(InputField(column, label))
    return fields


def _dimensions(raw: object, bad) -> list[Dimension]:
    if not isinstance(raw, list) or not raw:
        bad("dimensions", "must be a non-empty list of [[dimensions]] tables")
        return []
    if len(raw) > _MAX_DIMENSIONS:
        bad("dimensions", f"at most {_MAX_DIMENSIONS} dimensions")
        return []
    dims: list[Dimension] = []
    # Each column of `results` (with --probs) and who writes it: one writer per column, or
    # a row keeps only the last value written under that name.
    writers: dict[str, str | None] = dict.fromkeys(RESULT_COLUMNS)
    for i, entry in enumerate(raw):
        where = f"dimensions[{i}]"
        if not isinstance(entry, dict):
            bad(where, "must be a table")
            continue
        for key in sorted(set(entry) - _DIMENSION_KEYS):
            bad(f"{where}.{printable(key, 60)}", "unknown key")
        name = _text(entry, "name", f"{where}.name", bad, 64, required=True)
        name_ok = False
        if name and not _NAME_RE.match(name):
            bad(f"{where}.name", "must start with a letter and use only letters, digits and _")
        elif name in {d.name for d in dims} or name == "id":
            bad(f"{where}.name", f"{name!r} is used twice or reserved")
        else:
            name_ok = bool(name)
        question = _text(entry, "question", f"{where}.question", bad, _MAX_SHORT, required=True)
        kind = entry.get("kind", "single")
        if kind not in KINDS:
            bad(f"{where}.kind", f"must be one of {', '.join(KINDS)}")
            kind = "single"
        scale = entry.get("scale", "nominal" if kind == "multi" else None)
        if scale not in SCALES:
            bad(f"{where}.scale", f"must be one of {', '.join(SCALES)}")
            scale = "nominal"
        if kind == "multi" and scale != "nominal":
            bad(f"{where}.scale", "a multi-label dimension (kind = multi) is nominal")
        values = _values(entry.get("values"), scale, f"{where}.values", bad)
        anchors = _anchors(entry.get("anchors"), values, f"{where}.anchors", bad)
        low, high = _counts(entry, kind, len(values), where, bad)
        if kind == "multi" and any(";" in str(v) for v in values):
            bad(f"{where}.values", "multi-label values must not contain ';' (it joins them)")
        dim = Dimension(name, question, scale, values, anchors, kind, low, high)
        if name_ok:
            _check_result_columns(dim, writers, f"{where}.name", bad)
        dims.append(dim)
    return dims


def _counts(entry: dict, kind: str, n_values: int, where: str, bad) -> tuple[int, int | None]:
    """A multi-label dimension's optional `min` and `max` number of values per item."""
    if kind != "multi":
        for key in ("min", "max"):
            if key in entry:
                bad(f"{where}.{key}", "only a multi-label dimension (kind = multi) has it")
        return 0, None
    counts: list[int | None] = []
    for key, default in (("min", 0), ("max", None)):
        raw = entry.get(key, default)
        if raw is not None and (
            isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= n_values
        ):
            bad(f"{where}.{key}", f"must be a whole number from 0 to {n_values} (the values)")
            raw = default
        counts.append(raw)
    low, high = counts
    assert low is not None
    if high is not None and high < low:
        bad(f"{where}.max", f"must not be less than min ({low})")
        high = None
    if high == 0:
        bad(f"{where}.max", "must be at least 1")
    return low, high


def _check_result_columns(dim: Dimension, writers: dict[str, str | None], where: str, bad) -> None:
    for col in dim.result_columns(with_probs=True):
        if col not in writers:
            writers[col] = dim.name
        elif writers[col] is None:
            bad(where, f"{dim.name!r} is a column of `results`; rename the dimension")
            return
        else:
            bad(
                where,
                f"{dim.name!r} and dimension {writers[col]!r} would both write results "
                f"column {printable(col, 100)!r}; rename one",
            )
            return


def _values(raw: object, scale: str, where: str, bad) -> tuple[Value, ...]:
    if not isinstance(raw, list) or len(raw) < 2:
        bad(where, "must list at least two values")
        return ()
    if len(raw) > _MAX_VALUES:
        bad(where, f"at most {_MAX_VALUES} values")
        return ()
    if scale == "nominal":
        ok = all(isinstance(v, str) and v.strip() == v and 0 < len(v) <= 100 for v in raw)
        ok = ok and all(v.isprintable() for v in raw)
        if not ok:
            bad(where, "nominal values must be non-empty one-line strings without outer spaces")
            return ()
    elif not all(isinstance(v, int) and not isinstance(v, bool) and abs(v) < 10**9 for v in raw):
        bad(where, f"{scale} values must be integers")
        return ()
    if len(set(raw)) != len(raw):
        bad(where, "values must be unique")
        return ()
    if scale != "nominal" and list(raw) != sorted(raw):
        bad(where, f"{scale} values must be listed in increasing order")
    return tuple(raw)


def _anchors(
    raw: object, values: tuple[Value, ...], where: str, bad
) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        bad(where, "must be a table of value = description")
        return ()
    names = [str(v) for v in values]
    pairs: list[tuple[str, str]] = []
    for key, text in raw.items():
        if str(key) not in names:
            bad(f"{where}.{printable(key, 60)}", "is not one of the dimension's values")
        elif not isinstance(text, str) or not text.strip() or len(text) > _MAX_SHORT:
            bad(f"{where}.{printable(key, 60)}", f"must be text of 1 to {_MAX_SHORT} characters")
        elif "\n" in text or not text.isprintable():
            bad(f"{where}.{printable(key, 60)}", "must be one printable line")
        else:
            pairs.append((str(key), text))
    # Anchors follow the order of the values, whatever order the file used.
    return tuple(sorted(pairs, key=lambda kv: names.index(kv[0])))
