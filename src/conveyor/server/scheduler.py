"""Cron schedules: starts each due run once (to be written)."""

from __future__ import annotations


class CronScheduler:
    def __init__(self, store, settings):
        self._store, self._settings = store, settings

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
