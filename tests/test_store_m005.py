"""Migration m005: runs keyed without per-machine facts, which `run_machines` records.

Before m005 a run's key held the backend and the content-free priors computed on the machine
that started it, so the same job resumed on (or merged from) a machine with another CPU or a
GPU made a run of its own. Old project files are built here as `Store` built them before m005
(the old key written as the old code wrote it) and must open, migrate and resume their runs.
"""

from __future__ import annotations

import json

from annotator.data import Item
from annotator.project import migrations as migrations_module
from annotator.project.migrations import MIGRATIONS
from annotator.project.store import Label, Store
from annotator.rubric import rubric_from_dict

RUBRIC = rubric_from_dict(
    {
        "name": "m005",
        "instructions": "Label the text.",
        "inputs": [{"column": "text"}],
        "dimensions": [
            {
                "name": "sentiment",
                "question": "Which?",
                "scale": "nominal",
                "values": ["positive", "negative", "mixed"],
            }
        ],
    },
    "test",
)
SHA = "ab" * 32
READOUT = {
    "rule": "auto",
    "rules": {"sentiment": "argmax"},
    "prior": "none",
    "priors": {"sentiment": [0.5, 0.3, 0.2]},
}


def _settings(backend: str, priors: list[float], threads: int = 2) -> dict:
    return {
        "settings": {"n_ctx": 4096, "n_threads": threads, "gpu": "auto"},
        "backend": backend,
        "backend_reason": f"{backend} here",
        "versions": {"llama-cpp-python": "1"},
        "readout": {**READOUT, "priors": {"sentiment": priors}},
    }


def _old_key(settings: dict) -> str:
    """The run key as `find_or_start_run` wrote it before m005."""
    engine = {k: v for k, v in settings["settings"].items() if k != "n_threads"}
    return json.dumps(
        [SHA, RUBRIC.hash, engine, settings.get("backend"), settings.get("readout")], sort_keys=True
    )


def _old_project(path, monkeypatch) -> None:
    """A project of a CPU laptop, with a run from a merge ("kept by run") and a derived run."""
    with monkeypatch.context() as patch:
        patch.setattr(
            migrations_module,
            "MIGRATIONS",
            [m for m in MIGRATIONS if m.__name__ != "m005_run_machines"],
        )
        with Store(path) as store:
            store.bind_rubric(RUBRIC)
            store.add_items([Item(f"i{n}", n, {"text": f"text {n}"}) for n in range(4)])
            cpu = _settings("cpu", [0.5, 0.3, 0.2])
            kept = {**cpu, "merged_from": {"project": "/x/share-2.db", "run": 1}}
            with store.transaction() as db:
                for settings, key in (
                    (cpu, _old_key(cpu)),
                    (
                        kept,
                        json.dumps(
                            {"merged_from": "/x/share-2.db", "run": 1, "key": _old_key(cpu)},
                            sort_keys=True,
                        ),
                    ),
                    (cpu, json.dumps(["derived", 1, READOUT], sort_keys=True)),
                ):
                    db.execute(
                        "INSERT INTO runs (started_at, model_path, model_sha256, rubric_hash,"
                        " data_path, data_sha256, settings, run_key) VALUES (1000, 'm.gguf',"
                        " ?, ?, 'd.csv', ?, ?, ?)",
                        (SHA, RUBRIC.hash, "cd" * 32, json.dumps(settings, sort_keys=True), key),
                    )
            for item in ("i0", "i1"):
                store.save_annotation(
                    1, item, {"sentiment": Label("positive", 0.9, 0.5)}, 3, 0, 0.01
                )


def test_an_old_project_migrates_and_resumes_its_run_from_any_machine(tmp_path, monkeypatch):
    project = tmp_path / "p.db"
    _old_project(project, monkeypatch)
    with Store(project) as store:
        keys = dict(store.db.execute("SELECT id, run_key FROM runs"))
        # The same machine resumes its run, as before.
        assert store.find_or_start_run(
            model_path="m.gguf",
            model_sha256=SHA,
            rubric=RUBRIC,
            data_path="d.csv",
            data_sha256="cd" * 32,
            settings=_settings("cpu", [0.5, 0.3, 0.2], threads=8),
        ) == (1, True)
        # Another machine (a GPU, other priors in the last digits) resumes it too...
        assert store.find_or_start_run(
            model_path="/elsewhere/m.gguf",
            model_sha256=SHA,
            rubric=RUBRIC,
            data_path="d.csv",
            data_sha256="cd" * 32,
            settings=_settings("cuda", [0.500001, 0.3, 0.199999]),
        ) == (1, True)
        assert store.done_ids(1) == {"i0", "i1"}
        # ... and each machine is on record with the run.
        machines = store.run_machines(1)
        assert [source for source, _ in machines] == ["", ""]
        assert sorted(facts["backend"] for _, facts in machines) == ["cpu", "cuda"]
        assert {tuple(facts["priors"]["sentiment"]) for _, facts in machines} == {
            (0.5, 0.3, 0.2),
            (0.500001, 0.3, 0.199999),
        }
        # A run merged in under the old key keeps its place: the same share merged again
        # finds it; a derived run's key is left as it was.
        assert json.loads(keys[2])["key"] == keys[1]
        assert keys[3] == json.dumps(["derived", 1, READOUT], sort_keys=True)
