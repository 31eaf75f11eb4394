"""Moving the focus at once, so keys typed ahead go where the user expects.

`Widget.focus()` only schedules the change, after the events already queued: with keys typed
quickly (or sent in one burst, as tmux and paste do) "tab 5" would put the 5 on the dimension
being left, and "a space" would reach the tab being left. Setting it on the screen directly
makes the next key see the new focus.
"""

from __future__ import annotations

from textual.widget import Widget


def focus_now(widget: Widget) -> None:
    try:
        widget.screen.set_focus(widget)
    except Exception:  # not mounted (yet): fall back to the scheduled way
        widget.focus()
