"""Dependency graphs: cycles, order, what lies downstream."""

from __future__ import annotations

import pytest

from conveyor.pipelines.graph import dependents, downstream, find_cycle, topological_order

DIAMOND = {"prepare": [], "train": ["prepare"], "eval": ["train", "prepare"],
           "report": ["eval"], "lint": []}


def test_no_cycle() -> None:
    assert find_cycle(DIAMOND) is None
    assert find_cycle({}) is None


def test_self_loop() -> None:
    assert find_cycle({"a": [], "b": ["b"]}) == ["b"]


def test_long_cycle_in_dependency_order() -> None:
    deps = {"start": [], "a": ["start", "b"], "b": ["c"], "c": ["d"], "d": ["a"], "e": ["a"]}
    assert find_cycle(deps) == ["a", "b", "c", "d"]


def test_cycle_reached_from_outside() -> None:
    assert find_cycle({"x": ["a"], "a": ["b"], "b": ["a"]}) == ["a", "b"]


def test_topological_order_puts_dependencies_first() -> None:
    order = topological_order(DIAMOND)
    assert sorted(order) == sorted(DIAMOND)
    for task, needs in DIAMOND.items():
        assert all(order.index(need) < order.index(task) for need in needs)


def test_topological_order_keeps_declaration_order_otherwise() -> None:
    assert topological_order({"c": [], "a": [], "b": []}) == ["c", "a", "b"]
    assert topological_order({"late": ["early"], "early": [], "other": []}) == [
        "early", "other", "late"]
    assert topological_order(DIAMOND) == ["prepare", "lint", "train", "eval", "report"]


def test_topological_order_refuses_a_cycle() -> None:
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        topological_order({"a": ["b"], "b": ["a"], "c": []})


def test_dependents_is_the_reverse_graph() -> None:
    assert dependents(DIAMOND) == {"prepare": ["train", "eval"], "train": ["eval"],
                                   "eval": ["report"], "report": [], "lint": []}


def test_downstream() -> None:
    assert downstream(DIAMOND, "prepare") == ["train", "eval", "report"]
    assert downstream(DIAMOND, "eval") == ["report"]
    assert downstream(DIAMOND, "report") == []
    assert downstream(DIAMOND, "lint") == []
