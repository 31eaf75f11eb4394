"""One annotation job: a data file, a rubric and a model, labelled into a project store.

The CLI (one process, or each of --workers) and the terminal app drive a `Job`, opened from a
`JobSpec`: `Job.open` checks every input before any model is loaded, `Job.run()` yields after
each item has been committed, so the caller can show progress and stop between items without
losing anything. Rerunning the same job resumes it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp

from annotator.data import Item, Skipped, read_items
from annotator.errors import AnnotatorError
from annotator.inference.backend import EngineSettings, load_llama
from annotator.inference.engine import Engine, ItemResult
from annotator.jobs.spec import (
    DEFAULT_TIE_MARGIN,
    JobSpec,
    file_head,
    model_line,
    resolve_rubric,
    start_lines,
)
from annotator.modelfile import (
    KEY_CALIBRATION,
    ModelInfo,
    check_adapter_base,
    check_gguf_header,
    default_model_path,
    model_info_from_metadata,
    read_adapter_metadata,
    sha256_file,
)
from annotator.project.claims import worker_name
from annotator.project.store import Label, Store
from annotator.rubric import Rubric, load_rubric

# Claims: how long a claim holds unless renewed (a worker renews its claims each time it
# claims more, saves an item, and every quarter lease while it works), and how often to look
# again at items that other workers hold (a read of a few rows: cheap, and it ends the command
# sooner).
DEFAULT_LEASE = 300.0
CLAIM_POLL = 0.1  # a worker at the end of a run waits this long for another's last items


@dataclass
class Summary:
    items: int = 0  # annotatable items in the data file
    counted_all: bool = True  # False: a streamed file (--ray) stopped before its end was read
    done_before: int = 0  # already in the project when the job started (resumed)
    done_now: int = 0
    skipped: int = 0
    truncated: int = 0
    near_ties: int = 0  # a dimension whose margin is below the tie margin
    seconds: float = 0.0
    flagged_ids: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> int:
        return len(self.flagged_ids)


@dataclass
class Job:
    store: Store
    rubric: Rubric
    model: ModelInfo
    run_id: int
    resumed: bool
    engine: Engine
    todo: list[Item]
    skipped: list[Skipped]
    summary: Summary
    tie_margin: float = DEFAULT_TIE_MARGIN
    worker: str = field(default_factory=worker_name)  # this process, as a claim holder
    lease: float = DEFAULT_LEASE
    start_at: float = 0.0  # where in the items this process starts claiming (0 to 1)

    @classmethod
    def open(cls, spec: JobSpec) -> Job:
        """Check the inputs, load the model once, and find or start the run (resuming it).

        `spec.readout` turns the model's distributions into labels (default: `--rule auto`);
        a calibration head the model file carries labels the dimensions it covers."""
        settings, data, id_col, given = spec.settings, spec.data, spec.id_col, spec.id_col_given
        # A rubric file and the data are checked before the model loads: bad input fails fast.
        rubric = load_rubric(spec.rubric_path) if spec.rubric_path else None
        loaded = (
            read_items(data, [i.column for i in rubric.inputs], id_col, given) if rubric else None
        )
        path = spec.model_path()
        llm, info = load_model(path, settings, spec.base)
        store: Store | None = None
        try:
            store = Store(spec.project)
            rubric = rubric or resolve_rubric(None, info, store.rubric)
            rows, items, skipped = loaded or read_items(
                data, [i.column for i in rubric.inputs], id_col, given
            )
            store.bind_rubric(rubric)
            conflicts = store.add_items(items)
            skipped = sorted(skipped + conflicts, key=lambda s: s.row)
            conflicted = {s.id for s in conflicts}
            items = [i for i in items if i.id not in conflicted]
            engine = Engine(
                path,
                rubric,
                settings,
                llm=llm,
                readout=spec.readout,
                head=file_head(info, rubric, spec.readout),
            )
        except BaseException:
            if store is not None:
                store.close()
            llm.close()
            raise
        description = engine.describe()
        if info.is_adapter:
            description["base_model"] = {
                "path": os.path.abspath(engine.llm.model_path),
                "sha256": info.base_sha256,
            }
        model_sha256 = sha256_file(info.path)
        try:
            store.check_model(info.path, model_sha256)  # a share made by `project split`
        except AnnotatorError:
            engine.close()
            store.close()
            raise
        run_id, resumed = store.find_or_start_run(
            # Absolute: `calibrate --out` reads the file again from any folder (and checks it).
            model_path=os.path.abspath(info.path),
            model_sha256=model_sha256,
            rubric=rubric,
            data_path=os.path.abspath(data),
            data_sha256=rows.sha256,
            settings=description,
        )
        store.record_skipped(run_id, skipped)
        done = store.done_ids(run_id)
        todo = [i for i in items if i.id not in done]
        summary = Summary(
            items=len(items), done_before=len(items) - len(todo), skipped=len(skipped)
        )
        return cls(
            store, rubric, info, run_id, resumed, engine, todo, skipped, summary, spec.tie_margin
        )

    def start_lines(self, head: bool = True) -> list[str]:
        """What the drivers print once the job is open (`spec.start_lines`); `head`: with the
        calibration head's line, if the model file carries one."""
        dims = self.engine.head.dims if head and self.engine.head is not None else None
        lines = start_lines(
            model_line(self.model, self.engine.backend, self.engine.backend_reason),
            self.rubric,
            self.run_id,
            self.resumed,
            dims,
        )
        if head and not self.engine.readout.model_head and KEY_CALIBRATION in self.model.metadata:
            lines.append("calibration head in the model file not applied (--no-head)")
        return lines

    def run(self) -> Iterator[tuple[Item, ItemResult]]:
        """Label the remaining items, committing each before yielding it.

        Items are claimed before they are labelled (Store.claim), so other processes may
        work on the same run at the same time: each item is labelled by one of them."""
        started = time.perf_counter()
        # With --parallel the engine works ahead on the next items; results come in order.
        taken: deque[Item] = deque()
        results = self.engine.annotate_many(_fields(self._claimed(), taken))
        heartbeat = _Heartbeat(self.store.path, self.run_id, self.worker, self.lease)
        try:
            while True:
                heartbeat.working = True
                t0 = time.perf_counter()
                result = next(results, None)
                if result is None:
                    break
                item = taken.popleft()
                self._save(item, result, time.perf_counter() - t0)
                self.summary.seconds = time.perf_counter() - started
                heartbeat.working = False  # the caller may hold this between items (a pause)
                yield item, result
        finally:
            heartbeat.stop()

    def _save(self, item: Item, result: ItemResult, seconds: float) -> None:
        labels = {k: Label(d.value, d.prob, d.margin) for k, d in result.decisions.items()}
        self.store.save_annotation(
            self.run_id,
            item.id,
            labels,
            result.n_tokens,
            result.truncated_tokens,
            seconds,
            result.stored_probs(),
            result.stored_hidden(),
            worker=self.worker,
            lease=self.lease,
        )
        self.summary.done_now += 1
        near_tie = any(d.margin < self.tie_margin for d in result.decisions.values())
        self.summary.near_ties += near_tie
        self.summary.truncated += result.truncated_tokens > 0
        if near_tie or result.truncated_tokens:
            self.summary.flagged_ids.append(item.id)

    def _claimed(self) -> Iterator[Item | None]:
        """This job's items that this process claimed, in order. Each is claimed as the engine
        asks for it (one transaction, about a millisecond): a claim made ahead would hold an
        item that an idle worker could label, which on long items left one worker waiting
        seconds at the end of a run. Items that other live workers hold are tried again at
        the end (and waited for): if their worker dies its claims lapse and they are labelled
        here, so no item is left behind. Before waiting it yields None: the engine then
        finishes and saves the items it holds, so two processes never wait on each other."""
        by_id = {item.id: item for item in self.todo}
        pending = list(by_id)
        # Workers started together begin at different places (--workers sets `start_at`),
        # so they do not all contend for the same first items.
        first = int(len(pending) * self.start_at)
        pending = pending[first:] + pending[:first]
        while pending:
            held: list[str] = []
            for item_id in pending:
                got, others = self.store.claim(self.run_id, self.worker, [item_id], self.lease)
                held += others
                yield from (by_id[claimed] for claimed in got)
            pending = held
            if pending:
                yield None
                time.sleep(CLAIM_POLL)

    def close(self) -> None:
        self.engine.close()
        try:
            self.store.release_claims(self.run_id, self.worker)
        finally:
            self.store.close()


def _fields(items: Iterator[Item | None], taken: deque[Item]) -> Iterator[dict[str, str] | None]:
    """Item fields for the engine, remembering which item each result belongs to (None: no
    item ready now)."""
    for item in items:
        if item is not None:
            taken.append(item)
        yield None if item is None else item.fields


class _Heartbeat:
    """Renews a job's claims every quarter lease from a thread (with its own connection to the
    project) while the job works, so an item that takes longer than the lease keeps its
    claim. Not while the job's caller holds it between items (the app's pause): those claims
    lapse as before. A process that dies stops renewing with it."""

    def __init__(self, path: Path, run_id: int, worker: str, lease: float):
        self.working = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat,
            args=(path, run_id, worker, lease),
            name="annotator-claims",
            daemon=True,
        )
        self._thread.start()

    def _beat(self, path: Path, run_id: int, worker: str, lease: float) -> None:
        store: Store | None = None
        try:
            while not self._stop.wait(lease / 4):
                if not self.working:
                    continue
                try:
                    store = store or Store(path)
                    store.renew_claims(run_id, worker, lease)
                except (AnnotatorError, sqlite3.Error):
                    pass  # the next beat tries again (and each save renews them too)
        finally:
            if store is not None:
                store.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def load_model(
    path: Path, settings: EngineSettings, base: str | Path | None = None
) -> tuple[llama_cpp.Llama, ModelInfo]:
    """Load a model file, or a LoRA adapter file on its base (`base`, else the embedded
    default model), once; return it with what the file says about itself."""
    check_gguf_header(path)
    try:
        llm = load_llama(path, settings)
        return llm, model_info_from_metadata(path, dict(llm.metadata))
    except AnnotatorError:
        # llama.cpp cannot open an adapter on its own (it has no vocabulary): that failure
        # takes milliseconds, and only then is the file read as a possible adapter.
        adapter = read_adapter_metadata(path)
        if adapter is None:
            raise
    info = model_info_from_metadata(path, adapter)
    base_path = Path(base) if base else default_model_path()
    check_adapter_base(info, base_path)  # first: a missing base is named with the adapter
    check_gguf_header(base_path)
    return load_llama(base_path, settings, adapter=path), info


def open_job(*args: Any, **kwargs: Any) -> Job:
    """`Job.open(JobSpec(...))`, for callers that hold the spec's fields (scripts, tests)."""
    return Job.open(JobSpec(*args, **kwargs))
