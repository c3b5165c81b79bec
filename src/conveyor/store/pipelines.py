"""The store's part for pipelines registered with the server: their YAML and the folder runs start in.

A mixin of `Store`: the same engine and the same write discipline as runs.
"""

from __future__ import annotations


class PipelineRegistry:
    """Methods of `Store`; `self._engine` and `self._write` come from it."""
