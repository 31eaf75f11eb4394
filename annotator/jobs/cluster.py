"""`annotator annotate DATA ... --ray auto|local|ADDRESS`: label a large corpus on a Ray cluster.

Ray does the distribution. Each actor (one per engine, annotator/jobs/actors.py) loads the model
once, after checking the file's sha256 on its node, and labels blocks of items; the driver hands
blocks to the least busy actors. Every actor's backend, versions and settings must be the first
actor's (checked before any item is labelled, and again by an actor Ray restarts): a mismatch is
an error naming the actor and the fact. A killed actor is restarted by Ray (`max_restarts`) and
the block it held is run again (`max_task_retries`); an actor that returns no block within the
block timeout is taken as hung and killed, which Ray handles the same way. Labels are
deterministic, so a retried block gives the same labels. Only the driver (this process) writes
to the project, one transaction per item, skipping what the run already holds: a run is
exactly-once and resumable. The driver takes no claims: while a Ray run works on a run, do not
start other `annotate` commands on it (they would label some items twice; the store keeps one).

The data file is read as a stream (CSV, TSV, JSONL, Parquet), a block at a time, with at most
two blocks per actor in flight, so a corpus larger than memory works. Ray is imported only
here, only when --ray is used (the `[cluster]` extra).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from annotator.calibration.readout import Readout
from annotator.data import Item, Skipped
from annotator.errors import AnnotatorError
from annotator.inference.backend import EngineSettings
from annotator.jobs.actors import (
    LOAD_TIMEOUT,
    ActorPool,
    Labeller,
    block_timeout,
    check_actors,
    facts,
)
from annotator.jobs.job import Summary
from annotator.jobs.spec import (
    DEFAULT_TIE_MARGIN,
    JobSpec,
    Progress,
    Say,
    resolve_rubric,
    start_lines,
)
from annotator.jobs.stream import stream_items
from annotator.modelfile import read_sha256
from annotator.project.store import Label, Store
from annotator.rubric import Rubric

BLOCK = 16  # items per actor call (at most): long enough to hide the round trip, short to retry
SHARE = 4  # blocks per actor at least, where a file has fewer items than that many full ones


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
            ray.init(
                address=None if address == "local" else address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level="ERROR",
                configure_logging=False,
            )
        except ConnectionError as exc:
            raise AnnotatorError(f"--ray {address}: no Ray cluster there ({exc})") from exc
    return ray


def annotate_on_ray(
    data: str | Path,
    project: str | Path,
    rubric: Rubric,
    model: Path,
    model_sha256: str,
    base: Path | None,
    base_sha256: str | None,
    settings: EngineSettings,
    address: str,
    actors: int = 0,
    id_col: str = "id",
    id_col_given: bool = False,
    tie_margin: float = DEFAULT_TIE_MARGIN,
    progress: Progress | None = None,
    on_start: Callable[[ClusterRun], object] | None = None,
    readout: Readout | None = None,
    timeout: float | None = None,
) -> ClusterRun:
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
    pool_actors = [
        remote.remote(
            str(model),
            model_sha256,
            base and str(base),
            base_sha256,
            rubric.canonical_json(),
            settings,
            readout,
        )
        for _ in range(actors)
    ]
    loading = [a.describe.remote() for a in pool_actors]
    try:
        _, pending = ray.wait(loading, num_returns=len(loading), timeout=LOAD_TIMEOUT)
        if pending:
            late = [str(n) for n, ref in enumerate(loading) if ref in pending]
            for actor in pool_actors:
                ray.kill(actor)
            raise AnnotatorError(
                f"Ray actor(s) {', '.join(late)} did not start within {LOAD_TIMEOUT:.0f} s "
                "(not enough free CPUs for --actors and --threads, or a node that hangs)"
            )
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
            model_path=str(model),
            model_sha256=model_sha256,
            rubric=rubric,
            data_path=str(data),
            data_sha256=read_sha256(data),
            settings=description,
        )
        run = ClusterRun(
            run_id,
            resumed,
            actors,
            description["cluster"]["nodes"],
            Summary(),
            [],
            description,
            [(d["node"], d["pid"]) for d in described],
        )
        done = store.done_ids(run_id)
        if on_start is not None:
            on_start(run)
        summary = run.summary
        pool = ActorPool(
            ray,
            pool_actors,
            [d["node"] for d in described],
            facts(described[0]),
            (lambda n: timeout) if timeout else block_timeout,
        )
        started = time.perf_counter()
        bar = progress(None, "annotating", rate_unit="items") if progress else None
        advance = bar.__enter__() if bar else (lambda *a, **k: None)
        try:

            def save(results) -> None:
                for item_id, decisions, n_tokens, cut, seconds, probs, hidden in results:
                    labels = {k: Label(*v) for k, v in decisions.items()}
                    store.save_annotation(
                        run_id, item_id, labels, n_tokens, cut, seconds, probs, hidden
                    )
                    summary.done_now += 1
                    near_tie = any(v[2] < tie_margin for v in decisions.values())
                    summary.near_ties += near_tie
                    summary.truncated += cut > 0
                    if near_tie or cut:
                        summary.flagged_ids.append(item_id)
                    advance()

            for block in _blocks(
                stream_items(data, columns, id_col, id_col_given), store, run, done
            ):
                while not pool.has_free():
                    save(pool.next_results())
                pool.submit(block)
            while pool.has_next():
                save(pool.next_results())
        except ray.exceptions.RayActorError as exc:
            hung = f" ({'; '.join(pool.hung)})" if pool.hung else ""
            raise AnnotatorError(
                f"a Ray actor failed beyond its restarts: {_cause(exc)}{hung}"
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
            quiet = (
                contextlib.redirect_stdout(io.StringIO())
                if run.interrupted
                else contextlib.nullcontext()
            )
            with quiet:
                for actor in pool_actors:
                    ray.kill(actor)
                if run.interrupted:
                    ray.shutdown()
    return run


def _blocks(
    found: Iterator[Item | Skipped], store: Store, run: ClusterRun, done: set[str]
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
            yield todo[start : start + size]

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
        if "AnnotatorError:" in line:  # the error's own line, not a traceback's source line
            return line.split("AnnotatorError:", 1)[-1].strip()
    return text.splitlines()[0] if text else type(exc).__name__


def annotate_command(
    spec: JobSpec,
    address: str,
    actors: int,
    say: Say,
    progress: Progress,
    timeout: float | None = None,
) -> ClusterRun:
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
        where = (
            f"Ray: {run.actors} actors on {len(run.nodes)} node(s) ({', '.join(run.nodes)}), "
            f"backend {run.description['backend'].upper()}"
        )
        for line in start_lines(where, rubric, run.run_id, run.resumed):
            say(line)

    run = annotate_on_ray(
        spec.data,
        spec.project,
        rubric,
        model.resolve(),
        sha256_file(model),
        base,
        base_sha,
        spec.settings,
        address,
        actors,
        spec.id_col,
        spec.id_col_given,
        spec.tie_margin,
        progress,
        started,
        spec.readout,
        timeout,
    )
    for line in run.hung:
        say(line)
    return run
