"""Identifying processes across restarts: a pid plus its start time, so a reused pid is never mistaken."""

from __future__ import annotations

import os
import signal
import socket

import psutil

HOST = socket.gethostname()


def start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_same_process(pid: int, started: float | None) -> bool:
    """True if `pid` is alive and is the process that started at `started`."""
    current = start_time(pid)
    if current is None:
        return False
    return started is None or abs(current - started) < 0.05


def this_process_id() -> str:
    """`host:pid:start`: names the engine process that owns a run."""
    pid = os.getpid()
    return f"{HOST}:{pid}:{start_time(pid)}"


def owner_pid(owner: str) -> int | None:
    """The pid in a `host:pid:start` owner string."""
    pid_text = owner.split(":")[1] if owner.count(":") >= 2 else ""
    return int(pid_text) if pid_text.isdigit() else None


def owner_is_alive(owner: str) -> bool | None:
    """Whether the engine named by `owner` still runs; None when it runs on another host."""
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != HOST:
        return None
    try:
        return is_same_process(int(pid_text), float(started) if started != "None" else None)
    except ValueError:
        return False


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
