"""`annotator annotate DATA ... --ray auto|local|ADDRESS`: label a large corpus on a Ray cluster.

Ray does the distribution. Each actor (one per engine) loads the model once, after checking
the file's sha256 on its node, and labels blocks of items; the driver hands blocks to the
least busy actors. Every actor's backend, versions and settings must be the first actor's
(checked before any item is labelled, and again by an actor Ray restarts): a mismatch is an
error naming the actor and the fact. A killed actor is restarted by Ray (`max_restarts`) and
the block it held is run again (`max_task_retries`); an actor that returns no block within
the block timeout is taken as hung and killed, which Ray handles the same way. Labels are
deterministic, so a retried block gives the same labels. Only the driver (this process) writes to the project, one
transaction per item, skipping what the run already holds: a run is exactly-once and
resumable. The driver takes no claims: while a Ray run works on a run, do not start other
`annotate` commands on it (they would label some items twice; the store keeps one).

The data file is read as a stream (CSV, TSV, JSONL, Parquet), a block at a time, with at most
two blocks per actor in flight, so a corpus larger than memory works. Ray is imported only
here, only when --ray is used (the `[cluster]` extra).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from annotator.calibration.readout import Readout
from annotator.data import FORMATS, Item, Skipped, delimited_records, items_of, jsonl_records
from annotator.errors import AnnotatorError
from annotator.inference.backend import EngineSettings
from annotator.jobs.job import Summary
from annotator.jobs.spec import (
    DEFAULT_TIE_MARGIN,
    JobSpec,
    Progress,
    Say,
    resolve_rubric,
    start_lines,
)
from annotator.modelfile import read_sha256
from annotator.project.store import Label, Store
from annotator.rubric import Rubric

BLOCK = 16  # items per actor call (at most): long enough to hide the round trip, short to retry
IN_FLIGHT = 2  # blocks queued per actor, so an actor never waits for the driver
SHARE = 4  # blocks per actor at least, where a file has fewer items than that many full ones
# A block not returned within BLOCK_TIMEOUT_BASE + BLOCK_TIMEOUT_PER_ITEM s per item (10 min for
# 16 items) means a hung actor. Generous: a large model's long item on a slow CPU takes many
# seconds (the 270M model's, under one).
BLOCK_TIMEOUT_BASE = 120.0
BLOCK_TIMEOUT_PER_ITEM = 30.0
# For an actor to start and load the model: at the start, and again after a restart (on top of
# the block's timeout). An actor still pending (too few CPUs) or hung in loading is an error.
LOAD_TIMEOUT = 900.0


# -- streaming input --------------------------------------------------------------------------


def stream_items(path: Path, columns: list[str], id_col: str, id_col_given: bool
                 ) -> Iterator[Item | Skipped]:
    """Items (or skipped rows, with reasons) of a CSV/TSV/JSONL/Parquet file, read as a stream
    with the same rules as `annotator.data.read_items`."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        header, records = _parquet_records(path)
    elif suffix in FORMATS:
        fmt = FORMATS[suffix]
        try:
            handle = path.open("rb") if fmt == "jsonl" else path.open(
                encoding="utf-8", errors="surrogateescape", newline="")
        except OSError as exc:
            raise AnnotatorError(f"{path}: cannot read data file ({exc.strerror or exc})") from exc
        if fmt == "jsonl":
            header, records = None, jsonl_records(_bom_free(handle))
        else:
            header, records = delimited_records(path, handle, "\t" if fmt == "tsv" else ",")
    else:
        raise AnnotatorError(f"{path}: unknown data format (use .csv, .tsv, .jsonl or .parquet)")
    if header is not None:
        missing = [c for c in columns if c not in header]
        if missing:
            raise AnnotatorError(f"{path}: missing column(s) {', '.join(map(repr, missing))} "
                                 f"(the header has {', '.join(map(repr, header))})")
        if id_col_given and id_col not in header:
            raise AnnotatorError(f"{path}: no id column {id_col!r} in the header")
    use_row_numbers = header is not None and id_col not in header
    return items_of(records, columns, id_col, use_row_numbers, id_col_given)


def _bom_free(handle) -> Iterator[bytes]:
    first = True
    for line in handle:
        yield line.removeprefix(b"\xef\xbb\xbf") if first else line
        first = False


def _parquet_records(path: Path):
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise AnnotatorError(f"{path}: cannot read Parquet file ({exc})") from exc
    header = tuple(parquet.schema_arrow.names)

    def records():
        number = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                number += 1
                yield number, {k: v for k, v in record.items() if v is not None}

    return header, records()


# -- the actor --------------------------------------------------------------------------------


class Labeller:
    """One engine on one node. Built by Ray (`ray.remote(...)(Labeller)`), restarted by Ray."""

    def __init__(self, model: str, model_sha256: str, base: str | None, base_sha256: str | None,
                 rubric_json: str, settings: EngineSettings, readout: Readout | None = None):
        from annotator.inference.engine import Engine
        from annotator.jobs.job import load_model
        from annotator.rubric import rubric_from_json

        # Every node checks its own copy: a different or damaged file would label silently
        # differently from the rest of the run.
        for path, expected in ((model, model_sha256), (base, base_sha256)):
            if path is None or expected is None:
                continue
            try:
                found = read_sha256(Path(path))
            except OSError as exc:
                raise AnnotatorError(f"{socket.gethostname()}: {path}: model file not readable "
                                     f"on this node ({exc.strerror or exc})") from exc
            if found != expected:
                raise AnnotatorError(f"{socket.gethostname()}: {path}: sha256 {found[:12]} is "
                                     f"not the driver's {expected[:12]}; copy the same file")
        rubric = rubric_from_json(rubric_json, "rubric from the driver")
        llm, info = load_model(Path(model), settings, base)
        self.engine = Engine(model, rubric, settings, llm=llm, readout=readout,
                             head=info.head(rubric))

    def describe(self) -> dict:
        return {**self.engine.describe(), "node": socket.gethostname(), "pid": os.getpid()}

    def label(self, block: list[tuple[str, dict[str, str]]], expect: dict | None = None
              ) -> list[tuple[str, dict, int, int, float, dict, bytes | None]]:
        """(item id, {dimension: (value, prob, margin)}, tokens, tokens cut, seconds, every
        value's probability per dimension, float16 hidden states) per item. `expect`: the
        run's facts (`facts`); an actor that differs (one Ray restarted on another node)
        labels nothing."""
        import time

        if expect is not None:
            differences = _differences(expect, facts(self.describe()))
            if differences:
                raise AnnotatorError(f"Ray actor on {socket.gethostname()} (restarted) "
                                     f"differs from the run: {differences}")
        out = []
        for item_id, fields in block:
            t0 = time.perf_counter()
            result = self.engine.annotate(fields)
            decisions = {k: (d.value, d.prob, d.margin) for k, d in result.decisions.items()}
            out.append((item_id, decisions, result.n_tokens, result.truncated_tokens,
                        time.perf_counter() - t0, result.stored_probs(), result.stored_hidden()))
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
        if want.get(key, missing) != have.get(key, missing))


def check_actors(described: list[dict]) -> None:
    """Every actor's facts are the first's, else one line naming the actor and what differs."""
    first = facts(described[0])
    for n, found in enumerate(described[1:], 1):
        differences = _differences(first, facts(found))
        if differences:
            raise AnnotatorError(
                f"Ray actor {n} on {found['node']} differs from actor 0 on "
                f"{described[0]['node']}: {differences}; every node must run the same backend "
                "and versions (its labels would differ)")


def block_timeout(n_items: int) -> float:
    """The default: seconds an actor may take for a block of `n_items` before it counts as hung."""
    return BLOCK_TIMEOUT_BASE + BLOCK_TIMEOUT_PER_ITEM * n_items


class _Actors:
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
            deadlines = {n: self.since[n] + self.timeout(self.queues[n][0][1])
                         for n in heads.values()}
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
                    self.hung.append(f"Ray actor {n} on {self.nodes[n]} returned no block in "
                                     f"{seconds:.0f} s: taken as hung, restarted, its blocks "
                                     "run again")
                    self.ray.kill(self.actors[n], no_restart=False)  # Ray restarts it
                    self.since[n] = now + LOAD_TIMEOUT  # the restart, then the block again


# -- the driver -------------------------------------------------------------------------------


@dataclass
class ClusterRun:
    run_id: int
    resumed: bool
    actors: int
    nodes: list[str]
    summary: Summary
    skipped: list[Skipped]
    description: dict
    pids: list[tuple[str, int]]  # (node, pid) of each actor as first started
    interrupted: bool = False  # stopped by Ctrl-C: what was saved stays, a rerun resumes
    hung: list[str] = field(default_factory=list)  # actors killed for a block timeout


def connect(address: str):
    """auto: the cluster this machine belongs to (RAY_ADDRESS, or `ray start` here); local: a
    one-machine cluster in this process; else HOST:PORT of the head."""
    try:
        import ray
    except ImportError as exc:
        raise AnnotatorError("--ray needs the [cluster] extra: pip install '.[cluster]'") from exc
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR", configure_logging=False)
        except ConnectionError as exc:
            raise AnnotatorError(f"--ray {address}: no Ray cluster there ({exc})") from exc
    return ray


def annotate_on_ray(data: str | Path, project: str | Path, rubric: Rubric, model: Path,
                    model_sha256: str, base: Path | None, base_sha256: str | None,
                    settings: EngineSettings, address: str, actors: int = 0,
                    id_col: str = "id", id_col_given: bool = False,
                    tie_margin: float = DEFAULT_TIE_MARGIN, progress: Progress | None = None,
                    on_start: Callable[[ClusterRun], object] | None = None,
                    readout: Readout | None = None,
                    timeout: float | None = None) -> ClusterRun:
    """Label `data` into `project` on a Ray cluster. `progress`: a context manager factory
    like annotator.console.progress; `on_start(run)` is called once the run is known.
    `timeout`: seconds an actor may take for one block before it is taken as hung (default:
    `block_timeout`, by the block's size)."""
    import time

    ray = connect(address)

    data = Path(data)
    columns = [i.column for i in rubric.inputs]
    threads = settings.n_threads or 1
    settings = replace(settings, n_threads=threads)
    if actors <= 0:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
    remote = ray.remote(num_cpus=threads, max_restarts=3, max_task_retries=3)(Labeller)
    pool_actors = [remote.remote(str(model), model_sha256, base and str(base), base_sha256,
                                 rubric.canonical_json(), settings, readout)
                    for _ in range(actors)]
    loading = [a.describe.remote() for a in pool_actors]
    try:
        _, pending = ray.wait(loading, num_returns=len(loading), timeout=LOAD_TIMEOUT)
        if pending:
            late = [str(n) for n, ref in enumerate(loading) if ref in pending]
            for actor in pool_actors:
                ray.kill(actor)
            raise AnnotatorError(
                f"Ray actor(s) {', '.join(late)} did not start within {LOAD_TIMEOUT:.0f} s "
                "(not enough free CPUs for --actors and --threads, or a node that hangs)")
        described = ray.get(loading)
    except ray.exceptions.RayActorError as exc:
        raise AnnotatorError(f"a Ray actor could not load the model: {_cause(exc)}") from exc
    try:
        check_actors(described)  # before anything is stored or labelled
    except AnnotatorError:
        for actor in pool_actors:
            ray.kill(actor)
        raise
    description = facts(described[0])
    description["cluster"] = {"actors": actors, "nodes": sorted({d["node"] for d in described})}

    with Store(project) as store:
        store.bind_rubric(rubric)
        store.check_model(model, model_sha256)
        if base is not None:
            description["base_model"] = {"path": str(base), "sha256": base_sha256}
        run_id, resumed = store.find_or_start_run(
            model_path=str(model), model_sha256=model_sha256, rubric=rubric,
            data_path=str(data), data_sha256=read_sha256(data), settings=description)
        run = ClusterRun(run_id, resumed, actors, description["cluster"]["nodes"], Summary(),
                         [], description, [(d["node"], d["pid"]) for d in described])
        done = store.done_ids(run_id)
        if on_start is not None:
            on_start(run)
        summary = run.summary
        pool = _Actors(ray, pool_actors, [d["node"] for d in described], facts(described[0]),
                       (lambda n: timeout) if timeout else block_timeout)
        started = time.perf_counter()
        bar = progress(None, "annotating", rate_unit="items") if progress else None
        advance = bar.__enter__() if bar else (lambda *a, **k: None)
        try:
            def save(results) -> None:
                for item_id, decisions, n_tokens, cut, seconds, probs, hidden in results:
                    labels = {k: Label(*v) for k, v in decisions.items()}
                    store.save_annotation(run_id, item_id, labels, n_tokens, cut, seconds,
                                          probs, hidden)
                    summary.done_now += 1
                    near_tie = any(v[2] < tie_margin for v in decisions.values())
                    summary.near_ties += near_tie
                    summary.truncated += cut > 0
                    if near_tie or cut:
                        summary.flagged_ids.append(item_id)
                    advance()

            for block in _blocks(stream_items(data, columns, id_col, id_col_given), store,
                                 run, done):
                while not pool.has_free():
                    save(pool.next_results())
                pool.submit(block)
            while pool.has_next():
                save(pool.next_results())
        except ray.exceptions.RayActorError as exc:
            hung = f" ({'; '.join(pool.hung)})" if pool.hung else ""
            raise AnnotatorError(f"a Ray actor failed beyond its restarts: {_cause(exc)}{hung}"
                                 ) from exc
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, AnnotatorError):  # a restarted actor that differs
                raise AnnotatorError(str(exc.cause)) from None
            raise
        except KeyboardInterrupt:
            run.interrupted = True
        finally:
            run.hung = pool.hung
            if bar:
                bar.__exit__(None, None, None)
            summary.seconds = time.perf_counter() - started
            # After a Ctrl-C, blocks are still queued: Ray prints each as a failed task (on
            # stdout, from its listener thread) once its actor is killed. Expected then; leaving
            # the cluster stops the listener before stdout is given back.
            quiet = (contextlib.redirect_stdout(io.StringIO()) if run.interrupted
                     else contextlib.nullcontext())
            with quiet:
                for actor in pool_actors:
                    ray.kill(actor)
                if run.interrupted:
                    ray.shutdown()
    return run


def _blocks(found: Iterator[Item | Skipped], store: Store, run: ClusterRun, done: set[str]
            ) -> Iterator[list[tuple[str, dict[str, str]]]]:
    """Blocks of items still to label; items are stored and skipped rows recorded on the way
    (a block at a time, so memory does not grow with the file)."""
    items: list[Item] = []
    skipped: list[Skipped] = []

    def flush() -> list[tuple[str, dict[str, str]]]:
        conflicts = store.add_items(items)
        clash = {s.id for s in conflicts}
        skipped.extend(conflicts)
        if skipped:
            store.record_skipped(run.run_id, skipped)
            run.skipped += skipped
            run.summary.skipped += len(skipped)
        todo = [(i.id, i.fields) for i in items if i.id not in clash and i.id not in done]
        run.summary.items += len(items) - len(clash)
        run.summary.done_before += sum(i.id in done for i in items if i.id not in clash)
        items.clear()
        skipped.clear()
        return todo

    def split(todo: list[tuple[str, dict[str, str]]]) -> Iterator[list[tuple[str, dict[str, str]]]]:
        # Blocks of BLOCK, smaller when there are fewer than SHARE blocks of it per actor (a small
        # file, the end of a large one): no actor then waits while another holds all the work,
        # and items of unequal length even out between actors.
        size = max(1, min(BLOCK, -(-len(todo) // (run.actors * SHARE))))
        for start in range(0, len(todo), size):
            yield todo[start:start + size]

    run.summary.counted_all = False
    for entry in found:
        (items if isinstance(entry, Item) else skipped).append(entry)
        if len(items) >= BLOCK * 8:  # one transaction of add_items per 8 blocks
            yield from split(flush())
    todo = flush()
    run.summary.counted_all = True  # the file's end: every item is counted
    yield from split(todo)


def _cause(exc: Exception) -> str:
    text = str(exc)
    for line in text.splitlines():
        if "AnnotatorError" in line:
            return line.split("AnnotatorError:", 1)[-1].strip()
    return text.splitlines()[0] if text else type(exc).__name__


def annotate_command(spec: JobSpec, address: str, actors: int, say: Say, progress: Progress,
                     timeout: float | None = None) -> ClusterRun:
    """`annotator annotate --ray`: resolve model and rubric without loading the model here
    (the driver may be a small machine), then run on the cluster. `timeout`: per block, as
    in annotate_on_ray."""
    from annotator.modelfile import (
        check_adapter_base,
        default_model_path,
        model_info_from_metadata,
        read_adapter_metadata,
        read_model_info,
        sha256_file,
    )

    model = spec.model_path()
    try:
        info = read_model_info(model)
    except AnnotatorError:  # a LoRA adapter file has no vocabulary for llama.cpp to read
        metadata = read_adapter_metadata(model) if model.is_file() else None
        if metadata is None:
            raise
        info = model_info_from_metadata(model, metadata)
    base = base_sha = None
    if info.is_adapter:
        base = spec.base if spec.base else default_model_path()
        check_adapter_base(info, base)
        base, base_sha = base.resolve(), sha256_file(base)

    def project_rubric() -> Rubric | None:
        with Store(spec.project) as store:
            return store.rubric()

    rubric = resolve_rubric(spec.rubric_path, info, project_rubric)

    def started(run: ClusterRun) -> None:
        where = (f"Ray: {run.actors} actors on {len(run.nodes)} node(s) ({', '.join(run.nodes)}), "
                 f"backend {run.description['backend'].upper()}")
        for line in start_lines(where, rubric, run.run_id, run.resumed):
            say(line)

    run = annotate_on_ray(
        spec.data, spec.project, rubric, model.resolve(), sha256_file(model), base, base_sha,
        spec.settings, address, actors, spec.id_col, spec.id_col_given, spec.tie_margin,
        progress, started, spec.readout, timeout)
    for line in run.hung:
        say(line)
    return run
