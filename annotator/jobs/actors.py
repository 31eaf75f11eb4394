"""The Ray actors of an `annotate --ray` run (annotator/jobs/cluster.py drives them).

Each actor (`Labeller`, one engine) loads the model once, after checking the file's sha256 on
its node, and labels blocks of items. Every actor's facts (backend, versions, settings, prompt
format, readout) must be the first actor's (`check_actors`), and an actor Ray restarts checks
itself against them before it labels. On the driver, `ActorPool` keeps at most IN_FLIGHT
blocks queued on each actor and takes an actor that returns no block within the block timeout
as hung: it is killed, and Ray restarts it and runs its blocks again.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from annotator.calibration.readout import Readout
from annotator.errors import AnnotatorError
from annotator.inference.backend import EngineSettings
from annotator.modelfile import read_sha256

IN_FLIGHT = 2  # blocks queued per actor, so an actor never waits for the driver
# A block not returned within BLOCK_TIMEOUT_BASE + BLOCK_TIMEOUT_PER_ITEM s per item (10 min for
# 16 items) means a hung actor. Generous: a large model's long item on a slow CPU takes many
# seconds (the 270M model's, under one).
BLOCK_TIMEOUT_BASE = 120.0
BLOCK_TIMEOUT_PER_ITEM = 30.0
# For an actor to start and load the model: at the start, and again after a restart (on top of
# the block's timeout). An actor still pending (too few CPUs) or hung in loading is an error.
LOAD_TIMEOUT = 900.0


# -- the actor --------------------------------------------------------------------------------


class Labeller:
    """One engine on one node. Built by Ray (`ray.remote(...)(Labeller)`), restarted by Ray."""

    def __init__(
        self,
        model: str,
        model_sha256: str,
        base: str | None,
        base_sha256: str | None,
        rubric_json: str,
        settings: EngineSettings,
        readout: Readout | None = None,
    ):
        from annotator.inference.engine import Engine
        from annotator.jobs.job import load_model
        from annotator.jobs.spec import file_head
        from annotator.rubric import rubric_from_json

        # Every node checks its own copy: a different or damaged file would label silently
        # differently from the rest of the run.
        for path, expected in ((model, model_sha256), (base, base_sha256)):
            if path is None or expected is None:
                continue
            try:
                found = read_sha256(Path(path))
            except OSError as exc:
                raise AnnotatorError(
                    f"{socket.gethostname()}: {path}: model file not readable "
                    f"on this node ({exc.strerror or exc})"
                ) from exc
            if found != expected:
                raise AnnotatorError(
                    f"{socket.gethostname()}: {path}: sha256 {found[:12]} is "
                    f"not the driver's {expected[:12]}; copy the same file"
                )
        rubric = rubric_from_json(rubric_json, "rubric from the driver")
        llm, info = load_model(Path(model), settings, base)
        self.engine = Engine(
            model, rubric, settings, llm=llm, readout=readout, head=file_head(info, rubric, readout)
        )

    def describe(self) -> dict:
        return {**self.engine.describe(), "node": socket.gethostname(), "pid": os.getpid()}

    def label(
        self, block: list[tuple[str, dict[str, str]]], expect: dict | None = None
    ) -> list[tuple[str, dict, int, int, float, dict, bytes | None]]:
        """(item id, {dimension: (value, prob, margin)}, tokens, tokens cut, seconds, every
        value's probability per dimension, float16 hidden states) per item. `expect`: the
        run's facts (`facts`); an actor that differs (one Ray restarted on another node)
        labels nothing."""
        import time

        if expect is not None:
            differences = _differences(expect, facts(self.describe()))
            if differences:
                raise AnnotatorError(
                    f"Ray actor on {socket.gethostname()} (restarted) "
                    f"differs from the run: {differences}"
                )
        out = []
        for item_id, fields in block:
            t0 = time.perf_counter()
            result = self.engine.annotate(fields)
            decisions = {k: (d.value, d.prob, d.margin) for k, d in result.decisions.items()}
            out.append(
                (
                    item_id,
                    decisions,
                    result.n_tokens,
                    result.truncated_tokens,
                    time.perf_counter() - t0,
                    result.stored_probs(),
                    result.stored_hidden(),
                )
            )
        return out

    def pid(self) -> int:
        return os.getpid()


def facts(description: dict) -> dict:
    """What every actor of a run must share: its description less node and pid (backend,
    versions, settings, prompt format, readout)."""
    return {k: v for k, v in description.items() if k not in ("node", "pid")}


def _flat(facts: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in facts.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _differences(expected: dict, found: dict) -> str:
    """'' when equal, else each differing fact as `name VALUE (not EXPECTED)`, joined by ';'."""
    want, have = _flat(expected), _flat(found)
    missing = object()
    return "; ".join(
        f"{key} {'(none)' if have.get(key, missing) is missing else repr(have[key])} "
        f"(not {'(none)' if want.get(key, missing) is missing else repr(want[key])})"
        for key in sorted(set(want) | set(have), key=str)
        if want.get(key, missing) != have.get(key, missing)
    )


def check_actors(described: list[dict]) -> None:
    """Every actor's facts are the first's, else one line naming the actor and what differs."""
    first = facts(described[0])
    for n, found in enumerate(described[1:], 1):
        differences = _differences(first, facts(found))
        if differences:
            raise AnnotatorError(
                f"Ray actor {n} on {found['node']} differs from actor 0 on "
                f"{described[0]['node']}: {differences}; every node must run the same backend "
                "and versions (its labels would differ)"
            )


# -- the driver's side: blocks in flight on the actors ----------------------------------------


def block_timeout(n_items: int) -> float:
    """The default: seconds an actor may take for a block of `n_items` before it counts as hung."""
    return BLOCK_TIMEOUT_BASE + BLOCK_TIMEOUT_PER_ITEM * n_items


class ActorPool:
    """Blocks in flight: at most IN_FLIGHT queued on each actor (Ray runs one actor's calls in
    turn, so the first is running, timed from when it started). An actor whose running block
    is not back within its timeout is hung: it is killed, and Ray restarts it and runs its
    blocks again, as for an actor that died. A restarted actor has LOAD_TIMEOUT more for its
    block: it loads the model first."""

    def __init__(self, ray, actors: list, nodes: list[str], expect: dict, timeout) -> None:
        import collections

        self.ray, self.actors, self.nodes, self.expect = ray, actors, nodes, expect
        self.timeout = timeout  # seconds for a block of n items: timeout(n)
        self.queues: list = [collections.deque() for _ in actors]
        self.since = [0.0] * len(actors)
        self.hung: list[str] = []  # one line per actor taken as hung

    def has_free(self) -> bool:
        return any(len(q) < IN_FLIGHT for q in self.queues)

    def has_next(self) -> bool:
        return any(self.queues)

    def submit(self, block) -> None:
        import time

        n = min(range(len(self.queues)), key=lambda k: len(self.queues[k]))
        if not self.queues[n]:
            self.since[n] = time.monotonic()
        self.queues[n].append((self.actors[n].label.remote(block, self.expect), len(block)))

    def next_results(self) -> list:
        """The next block's results (whichever actor finishes first)."""
        import time

        while True:
            heads = {q[0][0]: n for n, q in enumerate(self.queues) if q}
            deadlines = {
                n: self.since[n] + self.timeout(self.queues[n][0][1]) for n in heads.values()
            }
            wait = max(0.0, min(deadlines.values()) - time.monotonic())
            ready, _ = self.ray.wait(list(heads), num_returns=1, timeout=wait)
            now = time.monotonic()
            if ready:
                n = heads[ready[0]]
                self.queues[n].popleft()
                self.since[n] = now  # the actor's next block starts now
                return self.ray.get(ready[0])
            for n, deadline in deadlines.items():
                if now >= deadline:
                    seconds = self.timeout(self.queues[n][0][1])
                    self.hung.append(
                        f"Ray actor {n} on {self.nodes[n]} returned no block in "
                        f"{seconds:.0f} s: taken as hung, restarted, its blocks "
                        "run again"
                    )
                    self.ray.kill(self.actors[n], no_restart=False)  # Ray restarts it
                    self.since[n] = now + LOAD_TIMEOUT  # the restart, then the block again
