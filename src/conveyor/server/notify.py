"""Webhooks on finished runs (to be written)."""

from __future__ import annotations


class Notifier:
    def __init__(self, store, public_url):
        self._store, self._public_url = store, public_url

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
