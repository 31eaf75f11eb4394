"""Claims: several processes labelling one run. A process claims an item before labelling it,
holds it for a lease and renews the lease while it works (a heartbeat); a claim held by a
process that died lapses and another process takes the item.

`Claims` holds these methods of `Store`, which inherits them and provides the connection.
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager


class Claims:
    """The claim methods of `Store`."""

    db: sqlite3.Connection
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]

    # -- claims: several processes labelling one run ----------------------------------------
    # Every process (a CLI, a --workers child, the app) claims an item before labelling it
    # (with --parallel, the items its engine works ahead on). A claim holds for a lease; a
    # process renews its claims whenever it claims more, saves an item (which ends that
    # item's claim) and, while it works, from a timer (annotator.jobs.job). A process that dies
    # leaves its claims to expire (at once when it ran on this machine and its pid is gone)
    # and another one takes them. The primary key on (run, item) of `annotations` keeps an
    # item from being stored twice even when a lease ran out under a slow process.

    def claim(
        self, run_id: int, worker: str, item_ids: Iterable[str], lease: float
    ) -> tuple[list[str], list[str]]:
        """Claim what of `item_ids` is neither labelled in the run nor claimed by a live
        worker: (claimed, held by others). Renews `worker`'s other claims in the run."""
        now = time.time()
        # A read first, without the write lock: walking past items that are done or held
        # (the usual case at the end of a run) costs no write transaction.
        free, held = self._claimable(run_id, worker, list(item_ids), now)
        if not free:
            return [], held
        with self.transaction() as db:
            db.execute(
                "UPDATE claims SET expires_at = ? WHERE run_id = ? AND worker = ?",
                (now + lease, run_id, worker),
            )
            free, taken = self._claimable(run_id, worker, free, now)  # again, under the lock
            db.executemany(
                "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)",
                [(run_id, item_id, worker, now + lease) for item_id in free],
            )
        return free, held + taken

    def _claimable(
        self, run_id: int, worker: str, item_ids: list[str], now: float
    ) -> tuple[list[str], list[str]]:
        """(not labelled and free or lapsed, held by another live worker)."""
        free: list[str] = []
        held: list[str] = []
        for item_id in item_ids:
            if self.db.execute(
                "SELECT 1 FROM annotations WHERE run_id = ? AND item_id = ?", (run_id, item_id)
            ).fetchone():
                continue
            row = self.db.execute(
                "SELECT worker, expires_at FROM claims WHERE run_id = ? AND item_id = ?",
                (run_id, item_id),
            ).fetchone()
            if row and row[0] != worker and row[1] > now and worker_alive(row[0]):
                held.append(item_id)
            else:
                free.append(item_id)
        return free, held

    def renew_claims(self, run_id: int, worker: str, lease: float) -> None:
        """Extend `worker`'s claims in the run to `lease` seconds from now (a heartbeat)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE claims SET expires_at = ? WHERE run_id = ? AND worker = ?",
                (time.time() + lease, run_id, worker),
            )

    def release_claims(self, run_id: int, worker: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM claims WHERE run_id = ? AND worker = ?", (run_id, worker))


def worker_name() -> str:
    """This process as a claim holder: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def worker_alive(worker: str) -> bool:
    """False only when `worker` ran on this machine and its process is gone; other hosts'
    workers count as alive until their lease runs out."""
    host, _, rest = worker.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
