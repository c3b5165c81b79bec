"""Runs each job as a bash session on this machine: its own process group, output piped to the sink.

Only the job's watcher thread reaps its process (wait4, for the rusage the usage meter
needs); everything else asks `returncode`, never `poll()`, so no other thread reaps it first.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import threading
import time
from typing import IO

from conveyor.executors.base import Exit, JobKey, Launch, OutputSink, Started, next_exit
from conveyor.executors.usage import UsageMeter
from conveyor.processes import HOST, kill_group, start_time

log = logging.getLogger(__name__)

# Like CI runners: a failing line fails the task, and so does a failing stage of a pipe.
SHELL = ["/bin/bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]
MAX_LINE = 64 * 1024  # longer lines are stored in pieces of this many bytes
READER_GRACE = 5.0  # seconds to drain output after the process group is gone


class LocalExecutor:
    def __init__(self, sink: OutputSink):
        self._sink = sink
        self._exits: queue.Queue[Exit] = queue.Queue()
        self._running: dict[JobKey, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._meter = UsageMeter()

    def start(self, launch: Launch) -> Started:
        try:
            proc = subprocess.Popen(
                [*SHELL, launch.command],
                cwd=launch.cwd,
                env=launch.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as err:
            self._exits.put(Exit(launch.key, None, error=f"could not start: {err}"))
            return Started(launch.key, HOST, None, None)
        # read before the watcher can reap it: a zombie still has its start time, a reaped one not
        started = start_time(proc.pid)
        self._meter.watch(proc.pid)
        with self._lock:
            self._running[launch.key] = proc
        threading.Thread(
            target=self._watch, args=(launch.key, proc), name=f"job-{proc.pid}", daemon=True
        ).start()
        return Started(launch.key, HOST, proc.pid, started)

    def wait(self, timeout: float) -> Exit | None:
        return next_exit(self._exits, timeout)

    def stop(self, key: JobKey, grace: float) -> None:
        with self._lock:
            proc = self._running.get(key)
        if proc is None or proc.returncode is not None:
            return
        kill_group(proc.pid, signal.SIGTERM)
        timer = threading.Timer(grace, self._kill_if_alive, args=(proc,))
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        with self._lock:
            procs = list(self._running.values())
        for proc in procs:
            kill_group(proc.pid, signal.SIGKILL)
        self._meter.close()

    @staticmethod
    def _kill_if_alive(proc: subprocess.Popen) -> None:
        if proc.returncode is None:
            kill_group(proc.pid, signal.SIGKILL)

    def _watch(self, key: JobKey, proc: subprocess.Popen) -> None:
        readers = [
            threading.Thread(target=self._pump, args=(key, name, pipe), daemon=True)
            for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))
        ]
        for reader in readers:
            reader.start()
        _, status, rusage = os.wait4(proc.pid, 0)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        usage = self._meter.finish(proc.pid, rusage)
        # The session ends with its command: stop what it left running in the background.
        kill_group(proc.pid, signal.SIGKILL)
        for reader in readers:
            reader.join(READER_GRACE)
        with self._lock:
            self._running.pop(key, None)
        if code < 0:
            self._exits.put(Exit(key, 128 - code, signal=-code, usage=usage))
        else:
            self._exits.put(Exit(key, code, usage=usage))

    def _pump(self, key: JobKey, stream: str, pipe: IO[bytes]) -> None:
        try:
            for raw in iter(lambda: pipe.readline(MAX_LINE), b""):
                self._sink(key, stream, time.time(), decode_line(raw))
        except (OSError, ValueError):
            log.warning("lost the %s pipe of %s", stream, key)
        finally:
            pipe.close()


def decode_line(raw: bytes) -> str:
    """Text of one output line: bytes that are not UTF-8 kept as \\xNN, NUL made visible."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
