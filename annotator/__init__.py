"""Offline rubric annotation: the laptop-side core (no torch, no textual)."""

__version__ = "0.1.0"
