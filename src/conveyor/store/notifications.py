"""The store's part for webhooks per pipeline and their deliveries.

A mixin of `Store`: the same engine and the same write discipline as runs.
"""

from __future__ import annotations


class NotificationState:
    """Methods of `Store`; `self._engine` and `self._write` come from it."""
