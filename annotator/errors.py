"""The one exception type the CLI turns into a one-line message (no traceback)."""


class AnnotatorError(Exception):
    """A problem with the user's input or environment, phrased for the user.

    The message names the file, row or key at fault and fits on one line.
    """


def printable(text: object, limit: int = 200) -> str:
    """Untrusted text (a key from a model file, a column name) made safe to print on one line:
    control characters, terminal escapes included, become '?'."""
    shown = str(text)[:limit]
    return "".join(c if c.isprintable() else "?" for c in shown)
