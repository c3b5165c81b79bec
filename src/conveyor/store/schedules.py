"""The store's part for cron schedules of pipelines and the ticks they handled.

A mixin of `Store`: the same engine and the same write discipline as runs.
"""

from __future__ import annotations


class ScheduleState:
    """Methods of `Store`; `self._engine` and `self._write` come from it."""
