"""The store's part for what each attempt's processes used: CPU time, peak memory, GPU memory.

A mixin of `Store`: the same engine and the same write discipline as runs.
"""

from __future__ import annotations


class UsageState:
    """Methods of `Store`; `self._engine` and `self._write` come from it."""
