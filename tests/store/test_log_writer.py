"""LogWriter: batches output into the store from a background thread, in order."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from conveyor.store.log_writer import LogWriter
from conveyor.store.repository import Store


@pytest.fixture
def run_id(store: Store) -> str:
    return store.create_run(pipeline="demo", pipeline_file="p.yaml", spec_text="",
                            options={}, task_statuses=[("a", "pending", None)])


@pytest.fixture
def writer(store: Store) -> Iterator[LogWriter]:
    writer = LogWriter(store, interval=0.2)
    yield writer
    writer.close()


def row(run_id: str, text: str) -> dict:
    return {"run_id": run_id, "task": "a", "attempt": 1, "rank": 0, "stream": "stdout",
            "at": time.time(), "text": text}


def texts(store: Store, run_id: str) -> list[str]:
    out: list[str] = []
    after = 0
    while page := store.read_logs(run_id, "a", after_id=after):
        out += [line.text for line in page]
        after = page[-1].id
    return out


def test_lines_are_readable_after_flush(store: Store, run_id: str, writer: LogWriter) -> None:
    for text in ["one", "두 번째", "three"]:
        writer.write(row(run_id, text))

    writer.flush()

    assert texts(store, run_id) == ["one", "두 번째", "three"]


def test_many_lines_keep_their_order(store: Store, run_id: str, writer: LogWriter) -> None:
    lines = [f"line {i}" for i in range(20_000)]
    for text in lines:
        writer.write(row(run_id, text))

    writer.flush()

    assert texts(store, run_id) == lines


def test_lines_become_readable_without_flush(
    store: Store, run_id: str, writer: LogWriter
) -> None:
    writer.write(row(run_id, "early"))
    writer.write(row(run_id, "bird"))

    deadline = time.monotonic() + 10  # the interval is 0.2 s; 10 s is only a bound for slow CI
    while texts(store, run_id) != ["early", "bird"]:
        assert time.monotonic() < deadline, f"still stored: {texts(store, run_id)}"
        time.sleep(0.05)


def test_close_stores_everything(store: Store, run_id: str) -> None:
    writer = LogWriter(store, interval=60, batch=1000)  # neither the timer nor flush stores them
    lines = [f"line {i}" for i in range(2_500)]
    for text in lines:
        writer.write(row(run_id, text))

    writer.close()

    assert texts(store, run_id) == lines
