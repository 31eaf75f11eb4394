"""Helpers for the terminal app's tests (no tests here): projects, waiting, reading widgets."""

from __future__ import annotations

import asyncio
import csv
import functools
import random
import time
from pathlib import Path

from conftest import SAMPLES

from annotator.data import read_items
from annotator.project.store import Label, Store
from annotator.rubric import load_rubric

GOEMO = SAMPLES / "goemotions"
RUBRIC = GOEMO / "rubric.toml"


def sample_subset(folder: Path, n: int, name: str = "items.csv") -> Path:
    """The first `n` GoEmotions sample rows as a data file in `folder`."""
    with (GOEMO / "items.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))[:n]
    path = folder / name
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def fabricated_project(folder: Path, n: int = 12, reviews: bool = True) -> Path:
    """A project with made-up (seeded) model labels and reviews: no model run, so screens
    built on it are the same on every machine. Paths inside are relative to `folder`."""
    data = sample_subset(folder, n)
    rubric = load_rubric(RUBRIC)
    _, items, _ = read_items(data, ["text"])
    project = folder / "p.db"
    rng = random.Random(7)
    values = [*list(rubric.dimensions[0].values[:4]), "neutral"]
    with Store(project) as store:
        store.bind_rubric(rubric)
        store.add_items(items)
        run_id, _ = store.find_or_start_run(
            model_path="model.gguf",
            model_sha256="0" * 64,
            rubric=rubric,
            data_path="items.csv",
            data_sha256="0" * 64,
            settings={"settings": {"n_ctx": 4096}, "backend": "cpu"},
        )
        model = {}
        for item in items:
            prob = round(rng.uniform(0.3, 0.95), 3)
            model[item.id] = rng.choice(values)
            store.save_annotation(
                run_id,
                item.id,
                {"emotion": Label(model[item.id], prob, round(prob * rng.uniform(0.05, 0.9), 3))},
                20,
                0,
                0.01,
            )
        if reviews:
            from annotator.tui.queues import audit_order

            order = audit_order(model)
            audit = [
                (i, "emotion", model[i] if k % 3 else rng.choice(values))
                for k, i in enumerate(order[:8])
            ]
            store.save_reviews("alice", "audit", audit)
            store.save_reviews("alice", "hard", [(order[-1], "emotion", "joy")])
    return project


async def wait_for(pilot, predicate, timeout: float = 120.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.05)


async def opened(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.info is not None, 60, "the project to open")
    await pilot.pause()


def text_of(widget) -> str:
    """The plain text of every Static inside `widget` (and of `widget` itself)."""
    from textual.widgets import Static

    statics = ([widget] if isinstance(widget, Static) else []) + list(widget.query(Static))
    return "\n".join(str(s.content) for s in statics)


def run_async(test):
    """Run an async test with asyncio (no pytest async plugin needed); fixtures still work."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run
