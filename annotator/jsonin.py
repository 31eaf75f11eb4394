"""JSON from outside the tool (data and review files, a model file's metadata): parsed or
refused with a reason, never a traceback.

`json.loads` fails in more ways than `JSONDecodeError`: an integer of more digits than
Python converts (4300 by default) raises a plain ValueError, deep nesting a RecursionError,
bytes that are not UTF-8 a UnicodeDecodeError; and an object with a key twice keeps the last
value silently. `parse_json` turns each into `NotJSON`, whose text is the reason (without the
source, so a data file can store it as a skipped row's reason); `load_json` raises it as an
`AnnotatorError` naming the source.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from annotator.errors import AnnotatorError, printable


class NotJSON(ValueError):
    """Input that is not JSON this tool reads; str() is the reason, one line."""


def _int(text: str) -> int:
    limit = sys.get_int_max_str_digits()
    digits = len(text.lstrip("-"))
    if limit and digits > limit:
        raise NotJSON(f"holds a number of {digits} digits (at most {limit} are read)")
    return int(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise NotJSON(f"key {printable(key, 60)!r} appears twice in an object")
            seen.add(key)
    return found


def parse_json(text: str | bytes) -> Any:
    """The value `text` holds; `NotJSON` (with the reason) when it is not JSON, holds a
    number too long to read, or an object with a key twice (json.loads keeps the last)."""
    try:
        return json.loads(text, parse_int=_int, object_pairs_hook=_object)
    except NotJSON:
        raise
    except json.JSONDecodeError as exc:
        raise NotJSON(
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except UnicodeDecodeError:
        raise NotJSON("not UTF-8 text") from None
    except RecursionError:
        raise NotJSON("not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # anything else json.loads refuses: one line, no traceback
        raise NotJSON(f"not valid JSON ({' '.join(str(exc).split())[:200]})") from None


def load_json(text: str | bytes, source: str) -> Any:
    """`parse_json`, with an `AnnotatorError` naming `source` (a file, with its row or key)."""
    try:
        return parse_json(text)
    except NotJSON as exc:
        raise AnnotatorError(f"{source}: {exc}") from None
