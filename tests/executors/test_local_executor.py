"""The local executor alone: exits, output streaming, stopping a process group."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conveyor.executors.base import JobKey, Launch
from conveyor.executors.local import LocalExecutor, decode_line


class Collected:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def __call__(self, key, stream, at, text):
        self.lines.append((stream, text))


def launch(command: str, tmp_path: Path, rank: int = 0) -> Launch:
    return Launch(JobKey("r", "t", 1, rank), command, tmp_path, dict(os.environ))


def test_exit_codes_and_output(tmp_path):
    sink = Collected()
    executor = LocalExecutor(sink)
    started = executor.start(launch("echo out; echo err >&2; exit 3", tmp_path))
    assert started.pid and started.started
    exit_ = executor.wait(10)
    assert exit_.exit_code == 3 and not exit_.ok
    assert exit_.describe() == "exit code 3"
    assert sorted(sink.lines) == [("stderr", "err"), ("stdout", "out")]
    executor.close()


def test_a_failing_line_fails_the_command(tmp_path):
    executor = LocalExecutor(Collected())
    executor.start(launch("false\necho still here", tmp_path))
    assert executor.wait(10).exit_code == 1


def test_missing_working_directory_is_an_exit_not_a_crash(tmp_path):
    executor = LocalExecutor(Collected())
    executor.start(launch("true", tmp_path / "does-not-exist"))
    exit_ = executor.wait(10)
    assert exit_.error and "could not start" in exit_.error
    assert not exit_.ok


def test_stop_terminates_then_kills_the_group(tmp_path):
    executor = LocalExecutor(Collected())
    started = executor.start(launch("trap '' TERM; sleep 60 & sleep 60", tmp_path))
    time.sleep(0.2)
    before = time.monotonic()
    executor.stop(started.key, grace=0.5)
    exit_ = executor.wait(10)
    assert exit_ is not None and exit_.signal == 9
    assert time.monotonic() - before >= 0.4, "SIGTERM was ignored, so SIGKILL came after grace"
    executor.close()


def test_long_lines_are_split_not_lost(tmp_path):
    sink = Collected()
    executor = LocalExecutor(sink)
    executor.start(launch("head -c 200000 /dev/zero | tr '\\0' a; echo", tmp_path))
    executor.wait(10)
    assert sum(len(text) for _, text in sink.lines) == 200000
    assert len(sink.lines) == 4  # pieces of at most 64 KiB


def test_decode_line_keeps_bad_bytes_visible():
    assert decode_line(b"ok \xff\r\n") == "ok \\xff"
    assert decode_line("한국어\n".encode()) == "한국어"
    assert decode_line(b"a\x00b") == "a\\x00b"
