"""What a head reads: an item's hidden states as a project stores them, and their mean.

Ordinal heads (heads.py) and nominal heads (nominal.py) read the same features; both import
them from here, so neither imports the other at module level.
"""

from __future__ import annotations

import numpy as np


def float16_states(hidden: np.ndarray) -> np.ndarray:
    """Hidden states as a project stores them: float16, clipped to its range (a middle block
    can hold a few activations beyond it; unclipped they would become infinite)."""
    limit = float(np.finfo(np.float16).max)
    return np.clip(np.asarray(hidden, dtype=np.float32), -limit, limit).astype(np.float16)


def features(hidden: np.ndarray) -> np.ndarray:
    """An item's features: the mean of its float16-rounded decision states, in float64."""
    states = float16_states(hidden).astype(np.float64)
    return states.mean(axis=0) if states.ndim == 2 else states


def stored_states(hidden: bytes | None, n_dims: int) -> np.ndarray:
    """An item's hidden states as a project stores them (float16 bytes), one row per
    dimension's decision point."""
    assert hidden is not None  # callers take only outputs that hold states
    return np.frombuffer(hidden, dtype="<f2").reshape(n_dims, -1)
