"""Dependency graphs as plain mappings `task -> [tasks it depends on]`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def find_cycle(deps: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One dependency cycle as the list of its tasks in order, or None."""
    colour: dict[str, int] = {}  # 0 unseen, 1 on the current path, 2 done
    for start in deps:
        if colour.get(start):
            continue
        path: list[str] = []
        stack = [(start, iter(deps.get(start, ())))]
        colour[start] = 1
        path.append(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                colour[node] = 2
            elif colour.get(child) == 1:
                return path[path.index(child):]
            elif not colour.get(child):
                colour[child] = 1
                path.append(child)
                stack.append((child, iter(deps.get(child, ()))))
    return None


def dependents(deps: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """The reverse graph: `task -> [tasks that depend on it]`."""
    reverse: dict[str, list[str]] = {name: [] for name in deps}
    for name, needs in deps.items():
        for need in needs:
            reverse.setdefault(need, []).append(name)
    return reverse


def downstream(deps: Mapping[str, Iterable[str]], name: str) -> list[str]:
    """Every task that depends on `name`, directly or not, in breadth-first order."""
    reverse = dependents(deps)
    seen: list[str] = []
    frontier = list(reverse.get(name, []))
    while frontier:
        task = frontier.pop(0)
        if task not in seen:
            seen.append(task)
            frontier.extend(reverse.get(task, []))
    return seen


def topological_order(deps: Mapping[str, Iterable[str]]) -> list[str]:
    """Tasks with every dependency before its dependents, otherwise in the given order."""
    remaining = {name: set(needs) for name, needs in deps.items()}
    order: list[str] = []
    while remaining:
        ready = [name for name, needs in remaining.items() if not needs]
        if not ready:
            raise ValueError(f"dependency cycle among {sorted(remaining)}")
        for name in ready:
            del remaining[name]
        for needs in remaining.values():
            needs.difference_update(ready)
        order.extend(ready)
    return order
