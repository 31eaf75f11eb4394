"""Run keys: what must match for a process, another machine or a merged share to join a run.

A run is what was asked: the model, the rubric, the engine settings that can change a label
and the readout. Where it ran is not: the backend (and `--gpu`, which picks it), thread
count, library versions, the build's CPU features and the content-free priors computed on
the machine (they may differ in the last digits between CPUs) are facts of each machine,
recorded per run in `run_machines`. So the same job resumed on another machine, or merged
from field laptops with other CPUs or a GPU (`annotator project merge`), is one run.
"""

from __future__ import annotations

import json

MACHINE_SETTINGS = ("n_threads", "gpu")  # engine settings that pick where, not what
MACHINE_KEYS = ("backend", "backend_reason", "versions", "cluster", "base_model")


def run_key(model_sha256: str, rubric_hash: str, settings: dict) -> str:
    """What must match for a process (or a merged share) to join a run."""
    return _run_key(model_sha256, rubric_hash, settings.get("settings"), settings.get("readout"))


def _run_key(model_sha256: str, rubric_hash: str, engine: object, readout: object) -> str:
    engine = (
        {k: v for k, v in (engine or {}).items() if k not in MACHINE_SETTINGS}
        if isinstance(engine, dict)
        else engine
    )
    if isinstance(readout, dict):
        readout = {k: v for k, v in readout.items() if k != "priors"}
    return json.dumps([model_sha256, rubric_hash, engine, readout], sort_keys=True)


def machine_facts(settings: dict) -> dict:
    """The facts of the machine a run's `settings` (an engine's description) came from."""
    facts = {k: settings[k] for k in MACHINE_KEYS if k in settings}
    engine = settings.get("settings")
    if isinstance(engine, dict) and "gpu" in engine:
        facts["gpu"] = engine["gpu"]
    readout = settings.get("readout")
    if isinstance(readout, dict) and "priors" in readout:
        facts["priors"] = readout["priors"]
    return facts


def rekeyed(key: str) -> str:
    """A run key as m005 writes it: one from before without the backend and the priors, a
    merge's "kept by run" key with its inner key so; any other key (a derived run's) as is."""
    try:
        parts = json.loads(key)
    except ValueError:
        return key
    if isinstance(parts, dict) and "merged_from" in parts and isinstance(parts.get("key"), str):
        return json.dumps({**parts, "key": rekeyed(parts["key"])}, sort_keys=True)
    if (
        isinstance(parts, list)
        and len(parts) == 5
        and parts[0] != "derived"
        and isinstance(parts[2], dict)
        and (parts[3] is None or isinstance(parts[3], str))
    ):
        model_sha256, rubric_hash, engine, _backend, readout = parts
        return _run_key(model_sha256, rubric_hash, engine, readout)
    return key
