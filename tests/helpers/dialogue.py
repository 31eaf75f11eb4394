"""A made-up project shaped like USR Topical-Chat (no tests here): six dimensions, three
reviewers, responses grouped by a shared `context`, and stored model outputs (value
distributions and hidden states) that carry a seeded signal. No model is loaded, so it builds
in a second and is the same on every machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annotator.data import Item
from annotator.project.store import Label, Store
from annotator.rubric import rubric_from_dict

REVIEWERS = ("rater1", "rater2", "rater3")
DIMENSIONS = (  # name, values: the USR rubric's scales (bench/rubrics/usr_topical_chat.toml)
    ("understandable", [0, 1]),
    ("natural", [1, 2, 3]),
    ("maintains_context", [1, 2, 3]),
    ("engaging", [1, 2, 3]),
    ("uses_knowledge", [0, 1]),
    ("overall", [1, 2, 3, 4, 5]),
)
# How much of each value is the item's true quality (the rest is noise), per dimension: the
# reviewers range from near-chance to strong agreement, the model from weak to good.
REVIEWER_SIGNAL = (0.5, 0.7, 0.8, 0.8, 0.95, 0.9)
MODEL_SIGNAL = (0.3, 0.6, 0.8, 0.5, 0.2, 0.85)
N_EMBD = 16

RUBRIC = rubric_from_dict(
    {
        "name": "dialogue",
        "instructions": "Rate the response.",
        "inputs": [{"column": "fact"}, {"column": "context"}, {"column": "response"}],
        "dimensions": [
            {"name": name, "question": "?", "scale": "ordinal", "values": values}
            for name, values in DIMENSIONS
        ],
    },
    "dialogue",
)


def _value(values: list, quality: float, signal: float, rng: np.random.Generator):
    """A value on the scale from a quality in [0, 1], with (1 - signal) of it noise."""
    mixed = signal * quality + (1 - signal) * rng.random()
    return values[min(len(values) - 1, int(mixed * len(values)))]


def dialogue_project(
    folder: Path, contexts: int = 10, per_context: int = 6, seed: int = 0, name: str = "p.db"
) -> Path:
    """`contexts` x `per_context` responses, every one labelled by the model (run 1) and
    imported as reviewed by the three reviewers."""
    rng = np.random.default_rng(seed)
    n = contexts * per_context
    items = [
        Item(
            f"r{k:03d}",
            k + 1,
            {"fact": "a fact", "context": f"dialogue {k // per_context}", "response": f"reply {k}"},
        )
        for k in range(n)
    ]
    quality = rng.random((n, len(DIMENSIONS)))
    # Hidden states: the true quality written into the first features, plus noise; the same
    # row at every dimension's decision point.
    hidden = rng.normal(size=(n, N_EMBD))
    hidden[:, : len(DIMENSIONS)] += 3 * quality
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
        for k, item in enumerate(items):
            labels, probs = {}, {}
            for d, (dim_name, values) in enumerate(DIMENSIONS):
                value = _value(values, quality[k, d], MODEL_SIGNAL[d], rng)
                p = np.full(len(values), 0.4 / max(1, len(values) - 1))
                p[values.index(value)] = 0.6
                labels[dim_name] = Label(value, 0.6, 0.2)
                probs[dim_name] = p.tolist()
            states = np.tile(hidden[k], (len(DIMENSIONS), 1)).astype("<f2").tobytes()
            store.save_annotation(run_id, item.id, labels, 20, 0, 0.01, probs, states)
        for reviewer in REVIEWERS:
            store.save_reviews(
                reviewer,
                "import",
                [
                    (item.id, dim_name, _value(values, quality[k, d], REVIEWER_SIGNAL[d], rng))
                    for k, item in enumerate(items)
                    for d, (dim_name, values) in enumerate(DIMENSIONS)
                ],
            )
    return project
