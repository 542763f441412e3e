"""The service's job table in SQLite (``DATA_DIR/jobs.sqlite``).

A job is ``queued``, then ``running`` (a worker claimed it), then ``done`` or ``failed``. A job
deleted while it runs becomes ``deleting``: invisible to clients, removed with its files by the
worker when it stops (:meth:`Jobs.finish` answers ``False``). Every change of status happens
under one lock, so a claim and a delete cannot interleave.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

ACTIVE = ("queued", "running", "deleting")  # jobs that hold a place in the queue or a worker
FINISHED = ("done", "failed")


class Jobs:
    """The job table; every call opens its own connection (threads and restarts safe).
    ``clock`` dates the jobs (seconds; tests pass their own)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time):
        self.path = path
        self.clock = clock
        self.lock = threading.Lock()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT, upload TEXT, "
                       "name TEXT, verdict TEXT, error TEXT, created REAL, updated REAL, model TEXT)")
            if "model" not in {r["name"] for r in db.execute("PRAGMA table_info(jobs)")}:
                db.execute("ALTER TABLE jobs ADD COLUMN model TEXT")  # a table from before several detectors
        path.chmod(0o600)  # client file names and verdicts

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    def add(self, job_id: str, upload: str, name: str, limit: int, model: str | None = None) -> bool:
        """Queue a job for detector ``model`` unless ``limit`` jobs are already queued or running."""
        with self.lock, self._db() as db:
            marks = ", ".join("?" * len(ACTIVE))
            active = db.execute(f"SELECT COUNT(*) FROM jobs WHERE status IN ({marks})", ACTIVE).fetchone()[0]
            if active >= limit:
                return False
            now = self.clock()
            db.execute("INSERT INTO jobs (id, status, upload, name, created, updated, model) "
                       "VALUES (?, 'queued', ?, ?, ?, ?, ?)", (job_id, upload, name, now, now, model))
            return True

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job as clients see it (None for one being deleted)."""
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ? AND status != 'deleting'", (job_id,)).fetchone()
        return dict(row) if row else None

    def claim(self) -> dict[str, Any] | None:
        """The oldest queued job, now running."""
        with self.lock, self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', updated = ? WHERE id = ?", (self.clock(), row["id"]))
            return dict(row)

    def finish(self, job_id: str, status: str, verdict: str | None = None, error: str | None = None) -> bool:
        """Record the end of a running job; ``False`` when it was deleted meanwhile (its row is then
        removed, and the caller removes its files)."""
        with self.lock, self._db() as db:
            if db.execute("DELETE FROM jobs WHERE id = ? AND status = 'deleting'", (job_id,)).rowcount:
                return False
            db.execute("UPDATE jobs SET status = ?, verdict = ?, error = ?, updated = ? WHERE id = ?",
                       (status, verdict, error, self.clock(), job_id))
            return True

    def abandon(self, job_id: str, error: str) -> str | None:
        """A job whose worker stopped: ``failed`` with ``error`` if it was running, ``deleted`` if
        it was being deleted (the caller removes its files), None if it had ended already."""
        with self.lock, self._db() as db:
            if db.execute("DELETE FROM jobs WHERE id = ? AND status = 'deleting'", (job_id,)).rowcount:
                return "deleted"
            failed = db.execute("UPDATE jobs SET status = 'failed', error = ?, updated = ? WHERE id = ? AND "
                                "status = 'running'", (error, self.clock(), job_id)).rowcount
            return "failed" if failed else None

    def delete(self, job_id: str) -> str | None:
        """``deleted`` (the row is gone: the caller removes its files), ``deleting`` (it is running:
        its worker removes it when it stops) or None (no such job)."""
        with self.lock, self._db() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] == "deleting":
                return None
            if row["status"] == "running":
                db.execute("UPDATE jobs SET status = 'deleting' WHERE id = ?", (job_id,))
                return "deleting"
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            return "deleted"

    def expire(self, before: float) -> list[str]:
        """Remove the jobs that finished before ``before``; their ids (the caller removes their files)."""
        with self.lock, self._db() as db:
            marks = ", ".join("?" * len(FINISHED))
            rows = db.execute(f"SELECT id FROM jobs WHERE status IN ({marks}) AND updated < ?",
                              (*FINISHED, before)).fetchall()
            db.executemany("DELETE FROM jobs WHERE id = ?", [(r["id"],) for r in rows])
        return [r["id"] for r in rows]

    def recover(self) -> int:
        """At start, before any worker: jobs that were running are queued again, and jobs that were
        being deleted are removed. How many were queued again."""
        with self.lock, self._db() as db:
            db.execute("DELETE FROM jobs WHERE status = 'deleting'")
            return db.execute("UPDATE jobs SET status = 'queued' WHERE status = 'running'").rowcount

    def counts(self) -> dict[str, int]:
        """Jobs by status (those being deleted included)."""
        with self._db() as db:
            return dict(db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())

    def ids(self) -> tuple[set[str], set[str]]:
        """The ids of all jobs, and of the done ones."""
        with self._db() as db:
            rows = db.execute("SELECT id, status FROM jobs").fetchall()
        return {r["id"] for r in rows}, {r["id"] for r in rows if r["status"] == "done"}
