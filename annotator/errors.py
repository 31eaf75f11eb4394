"""The one exception type the CLI turns into a one-line message (no traceback)."""


class AnnotatorError(Exception):
    """A problem with the user's input or environment, phrased for the user.

    The message names the file, row or key at fault and fits on one line.
    """
