"""One annotation job driven from a single worker thread, with pause, resume and cancel.

The engine (llama.cpp) and the job's SQLite connection must stay in the thread that made them,
so `AnnotationRunner.run` does everything, opening the job included, in the calling thread, and
the UI only flips events. Pausing and cancelling take effect between items: `Job.run` has
committed an item before it yields it, so stopping there never loses finished work, and a later
run of the same job resumes where this one stopped. No Textual here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from annotator.inference.backend import EngineSettings
from annotator.jobs.job import Job
from annotator.jobs.spec import DEFAULT_TIE_MARGIN, JobSpec
from annotator.project.store import Label


@dataclass(frozen=True)
class Started:
    run_id: int
    resumed: bool
    total: int  # annotatable items
    done_before: int  # already annotated when this job started
    skipped: int  # rows that cannot be annotated
    backend: str
    backend_reason: str


@dataclass(frozen=True)
class ItemDone:
    run_id: int
    item_id: str
    labels: dict[str, Label]
    truncated: int
    done: int  # annotated so far, earlier runs included
    total: int
    rate: float  # items per second of work (pauses left out)
    eta: float | None  # seconds
    flagged: int


@dataclass(frozen=True)
class Paused:
    """The thread has stopped between items and waits for resume or cancel."""

    done: int
    total: int


@dataclass(frozen=True)
class Finished:
    outcome: str  # "finished" or "cancelled"
    done: int
    total: int
    done_now: int
    flagged: int


Event = Started | ItemDone | Paused | Finished


class AnnotationRunner:
    def __init__(
        self,
        data: Path,
        project: Path,
        rubric: Path | None,
        model: Path | None,
        settings: EngineSettings | None = None,
        tie_margin: float = DEFAULT_TIE_MARGIN,
        base: Path | None = None,
    ):
        # The job as the CLI would run it (a rubric file, else the model's, else the project's;
        # an adapter model on `base`, else the embedded model).
        self.spec = JobSpec(
            data,
            project,
            rubric,
            model,
            settings=settings or EngineSettings(),
            tie_margin=tie_margin,
            base=base,
        )
        self._go = threading.Event()  # set: running; clear: paused
        self._go.set()
        self._cancel = threading.Event()

    # Called from the UI thread.
    def pause(self) -> None:
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    def cancel(self) -> None:
        self._cancel.set()
        self._go.set()  # wake a paused loop so it can see the cancel

    @property
    def paused(self) -> bool:
        return not self._go.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # Called in the worker thread; raises AnnotatorError for the user's problems.
    def run(self, emit: Callable[[Event], object]) -> Finished:
        job = Job.open(self.spec)
        try:
            s = job.summary
            emit(
                Started(
                    job.run_id,
                    job.resumed,
                    s.items,
                    s.done_before,
                    s.skipped,
                    job.engine.backend,
                    job.engine.backend_reason,
                )
            )
            busy = 0.0
            items = job.run()
            while self._wait_while_paused(
                lambda: emit(Paused(s.done_before + s.done_now, s.items))
            ):
                started = time.perf_counter()
                try:
                    item, result = next(items)
                except StopIteration:
                    break
                busy += time.perf_counter() - started
                rate = s.done_now / busy if busy > 0 else 0.0
                left = s.items - s.done_before - s.done_now
                labels = {k: Label(d.value, d.prob, d.margin) for k, d in result.decisions.items()}
                emit(
                    ItemDone(
                        job.run_id,
                        item.id,
                        labels,
                        result.truncated_tokens,
                        s.done_before + s.done_now,
                        s.items,
                        rate,
                        left / rate if rate > 0 else None,
                        s.flagged,
                    )
                )
            outcome = "cancelled" if self.cancelled else "finished"
            done = Finished(outcome, s.done_before + s.done_now, s.items, s.done_now, s.flagged)
        finally:
            job.close()
        emit(done)
        return done

    def _wait_while_paused(self, on_pause: Callable[[], object]) -> bool:
        """Block while paused (telling `on_pause` once); False once cancelled."""
        if not self._go.is_set():
            on_pause()
            while not self._go.wait(0.2):
                pass
        return not self._cancel.is_set()
