"""A made-up project for calibrating from the app (no tests here): two dimensions (ordinal and
nominal), 40 items, stored model outputs whose hidden states carry each item's true values
(plus noise) while the model's own labels are mostly noise, and no reviews. No model is
loaded: it builds in a second and is the same on every machine. `TRUTH` is what a careful
reviewer answers, so heads fitted on their reviews beat the model's labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annotator.data import Item
from annotator.project.store import Label, Store
from annotator.rubric import rubric_from_dict

DIMENSIONS = (
    ("quality", "ordinal", [1, 2, 3]),
    ("kind", "nominal", ["praise", "complaint", "other"]),
)
RUBRIC = rubric_from_dict(
    {
        "name": "tone",
        "instructions": "Rate the comment.",
        "inputs": [{"column": "text"}],
        "dimensions": [
            {"name": name, "question": "?", "scale": scale, "values": values}
            for name, scale, values in DIMENSIONS
        ],
    },
    "tone",
)
N_ITEMS, N_EMBD = 40, 16


def truth(n: int = N_ITEMS, seed: int = 0) -> dict[str, dict[str, int]]:
    """item id -> dimension -> the true value's position on its scale."""
    rng = np.random.default_rng(seed)
    return {
        f"c{k:03d}": {name: int(rng.integers(len(values))) for name, _, values in DIMENSIONS}
        for k in range(n)
    }


def calibration_project(folder: Path, name: str = "p.db", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed + 1)
    true = truth(seed=seed)
    items = [Item(i, k + 1, {"text": f"comment {k}"}) for k, i in enumerate(true)]
    project = folder / name
    with Store(project) as store:
        store.bind_rubric(RUBRIC)
        store.add_items(items)
        run_id, _ = store.find_or_start_run(
            model_path="model.gguf",
            model_sha256="0" * 64,
            rubric=RUBRIC,
            data_path="items.csv",
            data_sha256="0" * 64,
            settings={"settings": {"n_ctx": 4096, "hidden_layer": 9}, "backend": "cpu"},
        )
        for item in items:
            hidden = rng.normal(scale=1.0, size=N_EMBD)
            hidden[0] += 2 * true[item.id]["quality"]
            hidden[1 + true[item.id]["kind"]] += 2
            labels, probs = {}, {}
            for dim_name, _, values in DIMENSIONS:
                # The model: right one time in five, else a random value.
                pick = true[item.id][dim_name] if rng.random() < 0.2 else rng.integers(3)
                p = np.full(len(values), 0.2)
                p[pick] = 0.6
                labels[dim_name] = Label(values[pick], 0.6, 0.4)
                probs[dim_name] = p.tolist()
            states = np.tile(hidden, (len(DIMENSIONS), 1)).astype("<f2").tobytes()
            store.save_annotation(run_id, item.id, labels, 20, 0, 0.01, probs, states)
    return project
