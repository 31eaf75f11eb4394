"""`annotator annotate --workers N`: N engine processes on this machine, one project.

Each worker is a child process that opens the same job spec (the run is found or started
atomically, so all of them land in one run), loads its own model and labels the items it
claims (Job.run). The CPU threads are split between them: on a small box two engines with
one thread each keep the cores busier than one engine with two (its per-token work has
serial parts). The parent loads no model; it shows one progress bar from the workers'
messages and sums their summaries. A worker that dies leaves its claims to the others; one
that fails says why in one line (no traceback, no item text), and when no worker finished
the items, the command fails.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queues
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field, replace

from annotator.data import Skipped
from annotator.errors import AnnotatorError
from annotator.jobs.job import Summary
from annotator.jobs.spec import JobSpec, Progress, Say

POLL = 0.5  # seconds between looks at the workers when no message comes


def split_threads(total: int, workers: int) -> list[int]:
    """`total` threads over `workers` engines, at least one each: 5 over 2 -> [3, 2]."""
    base, extra = divmod(max(total, workers), workers)
    return [base + (i < extra) for i in range(workers)]


@dataclass
class Outcome:
    """What the workers did together, for the same summary lines as one process."""

    run_id: int = 0
    summary: Summary = field(default_factory=Summary)
    skipped: list[Skipped] = field(default_factory=list)
    interrupted: bool = False
    failed: list[str] = field(default_factory=list)  # a line per worker that failed or died
    finished: bool = False  # a worker got to the end of the items: every one is labelled

    @property
    def unfinished(self) -> bool:
        """A worker failed and no other finished its items."""
        return bool(self.failed) and not self.finished

    def ended(self, index: int, payload: dict) -> None:
        """A worker's last message."""
        _add(self.summary, payload["summary"])
        self.interrupted |= payload["interrupted"]
        self.finished |= payload["finished"]
        if payload["failed"]:
            self.failed.append(f"worker {index + 1} failed: {payload['failed']}")


def run_workers(workers: int, spec: JobSpec, say: Say, progress: Progress) -> Outcome:
    """Run `workers` child processes on the job `spec`, its threads split between them.

    `say(line)` prints a status line; `progress(total, what, rate_unit=...)` is the
    progress context manager (annotator.console.progress)."""
    settings = spec.settings
    total = settings.n_threads or len(os.sched_getaffinity(0))
    context = _process_context()
    messages = context.Queue()
    children = []
    for index, threads in enumerate(split_threads(total, workers)):
        child_spec = replace(spec, settings=replace(settings, n_threads=threads))
        child = context.Process(
            target=_worker,
            args=(index, workers, child_spec, messages),
            name=f"annotator-worker-{index}",
            daemon=True,
        )
        child.start()
        children.append(child)

    outcome = Outcome()
    ended: set[int] = set()
    started_at: float | None = None
    bar = advance = None
    try:
        while len(ended) < len(children):
            try:
                message = messages.get(timeout=POLL)
            except queues.Empty:
                for index, child in enumerate(children):
                    if index not in ended and not child.is_alive() and messages.empty():
                        ended.add(index)
                        outcome.failed.append(
                            f"worker {index + 1} exited with code {child.exitcode}"
                        )
                continue
            kind, index, payload = message
            if kind == "error":
                raise AnnotatorError(payload)
            if kind == "started" and bar is None:
                started_at = time.perf_counter()
                outcome.run_id = payload["run_id"]
                outcome.skipped = payload["skipped"]
                outcome.summary.items = payload["items"]
                outcome.summary.skipped = len(payload["skipped"])
                for line in payload["lines"]:
                    say(line)
                say(
                    f"{workers} workers x {', '.join(map(str, split_threads(total, workers)))}"
                    " thread(s), one project"
                )
                bar = progress(payload["todo"], "annotating", rate_unit="items")
                advance = bar.__enter__()
            elif kind == "item" and advance is not None:
                advance()
            elif kind == "end":
                ended.add(index)
                outcome.ended(index, payload)
    except KeyboardInterrupt:
        # The workers got the same Ctrl-C (one process group): each saves and stops.
        outcome.interrupted = True
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        # Read what the workers still send while they stop (a child cannot exit while its
        # messages sit unread in the pipe), so an interrupted run still counts their work.
        # Once every worker has sent its end there is nothing left to read: just join them
        # (waiting on the queue then would hold the command up for a whole poll).
        deadline = time.monotonic() + 60
        while (
            len(ended) < len(children)
            and any(c.is_alive() for c in children)
            and time.monotonic() < deadline
        ):
            try:
                kind, index, payload = messages.get(timeout=POLL)
            except (queues.Empty, KeyboardInterrupt):
                continue
            if kind == "end" and index not in ended:
                ended.add(index)
                outcome.ended(index, payload)
        for child in children:
            child.join(timeout=max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                child.terminate()
                child.join()
    outcome.summary.seconds = time.perf_counter() - started_at if started_at else 0.0
    if outcome.run_id:
        from annotator.project.store import Store

        with Store(spec.project) as store:
            done = store.annotated_count(outcome.run_id)
        outcome.summary.done_before = max(0, done - outcome.summary.done_now)
    return outcome


def _process_context() -> multiprocessing.context.BaseContext:
    """How the workers start. On Linux they are forked from this process once it has imported
    the engine's modules: each then starts labelling about 0.3 s sooner than a fresh
    interpreter that imports them again (a fifth of a worker's start on a small box). Forking
    is safe only with no other thread running and no model loaded, as here; elsewhere (macOS
    system libraries do not survive a fork) or with threads, a fresh interpreter."""
    if sys.platform == "linux" and threading.active_count() == 1:
        import annotator.jobs.job  # noqa: F401  (llama_cpp and numpy, loaded once for every worker)

        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _add(total: Summary, part: Summary) -> None:
    total.done_now += part.done_now
    total.truncated += part.truncated
    total.near_ties += part.near_ties
    total.flagged_ids += part.flagged_ids


def failure_reason(exc: BaseException) -> str:
    """Why a worker failed, in words that hold no item text, id or path: the tool's own
    message (written for the user), SQLite's (fixed texts such as "database is locked"), an
    OS error's name and reason, else only the exception's type."""
    if isinstance(exc, AnnotatorError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, sqlite3.Error):
        return f"SQLite: {str(exc).splitlines()[0]}" if str(exc) else "SQLite error"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__} (an internal error)"


def _worker(index: int, workers: int, spec: JobSpec, messages) -> None:
    """One engine process: open the job, label what it claims, report each item. It ends
    with an "end" message (its summary, whether it got to the end of the items and why it
    failed, if it did), or an "error" when the job cannot open (the same for every worker)."""
    from annotator.jobs.job import Job

    def end(summary: Summary, interrupted: bool, finished: bool, failed: str | None) -> None:
        messages.put(
            (
                "end",
                index,
                {
                    "summary": summary,
                    "interrupted": interrupted,
                    "finished": finished,
                    "failed": failed,
                },
            )
        )

    try:
        job = Job.open(spec)
    except AnnotatorError as exc:
        messages.put(("error", index, str(exc)))
        return
    except KeyboardInterrupt:
        return
    except Exception as exc:  # a locked project, a broken engine: this worker only
        end(Summary(), False, False, failure_reason(exc))
        return
    job.start_at = index / workers
    messages.put(
        (
            "started",
            index,
            {
                "run_id": job.run_id,
                "items": job.summary.items,
                "todo": len(job.todo),
                "skipped": job.skipped,
                "lines": job.start_lines(head=False),
            },
        )
    )
    interrupted = finished = False
    failed: str | None = None
    try:
        for _ in job.run():
            messages.put(("item", index, None))
        finished = True
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:
        failed = failure_reason(exc)
    finally:
        try:
            job.close()
        except Exception as exc:
            failed = failed or failure_reason(exc)
    end(job.summary, interrupted, finished, failed)
