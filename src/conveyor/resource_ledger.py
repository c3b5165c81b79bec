"""What runs and services on this machine hold, so that a pipeline and a service (or two runs)
never hand out the same CPUs, memory or GPU share.

Every holder records its grants in the store (task attempts, service replicas) with the
process that owns them; grants of processes that are gone do not count.
"""

from __future__ import annotations

from conveyor.pipelines.resources import Grant, ResourcePool
from conveyor.processes import owner_is_alive
from conveyor.store.repository import Store


def held_elsewhere(store: Store, *, except_run: str | None = None,
                   except_service: str | None = None) -> list[Grant]:
    held = []
    for owner, resources in store.resources_in_use(except_run=except_run,
                                                   except_service=except_service):
        if resources.get("executor", "local") != "local":
            continue  # held on a cluster, not on this machine
        if owner_is_alive(owner):  # other hosts (None) have their own capacity
            held += [Grant.from_dict(node) for node in resources.get("nodes", [resources])]
    return held


def acquire(pool: ResourcePool, request, copies: int, elsewhere: list[Grant]):
    """`pool.try_acquire_all` with what others hold counted as taken meanwhile."""
    for grant in elsewhere:
        pool.hold(grant)
    try:
        return pool.try_acquire_all(request, copies)
    finally:
        for grant in elsewhere:
            pool.release(grant)
