"""Batches task output into the store from a background thread.

Lines become readable within `interval` seconds; `flush` waits until every
line handed in so far is stored, so a task is never marked finished before
its output is. A producer far ahead of the database is made to wait.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from conveyor.store.repository import Store

log = logging.getLogger(__name__)


class LogWriter:
    def __init__(self, store: Store, interval: float = 0.2, batch: int = 2000,
                 max_pending: int = 50_000):
        self._store = store
        self._interval = interval
        self._batch = batch
        self._max_pending = max_pending
        self._pending: list[dict] = []
        self._handed = 0  # rows handed in so far
        self._stored = 0  # rows stored so far
        self._closing = False
        self._flushing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="log-writer", daemon=True)
        self._thread.start()

    def write(self, row: dict) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError("the log writer is closed")
            self._cond.wait_for(
                lambda: len(self._pending) < self._max_pending or self._closing
            )
            self._pending.append(row)
            self._handed += 1
            if len(self._pending) >= self._batch:
                self._cond.notify_all()

    def flush(self) -> None:
        with self._cond:
            target = self._handed
            if self._stored >= target:
                return
            self._flushing = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._stored >= target or not self._thread.is_alive())

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._closing or self._flushing or len(self._pending) >= self._batch,
                    timeout=self._interval,
                )
                rows, self._pending = self._pending[: self._batch], self._pending[self._batch :]
                self._flushing = bool(self._pending) and self._flushing
                closing = self._closing
            if rows:
                self._store_rows(rows)
                with self._cond:
                    self._stored += len(rows)
                    self._cond.notify_all()
            elif closing:
                return

    def _store_rows(self, rows: list[dict]) -> None:
        """Retry while the database is locked or unreachable; rows it refuses are reported."""
        delay = 0.1
        while True:
            try:
                self._store.append_logs(rows)
                return
            except OperationalError:
                log.warning("could not store %d log lines; retrying in %.1fs", len(rows), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except SQLAlchemyError:
                log.exception("the store refused %d log lines; they are lost", len(rows))
                return
