"""What a job's processes used: CPU time, peak resident memory and GPU memory of the whole tree.

Sizing a task's `resources` needs what it really took. One sampler thread per executor
walks every job's process tree (the root and all its descendants) twice a second,
since the peak of a tree is the sum of its processes at one moment; the exact
rusage of the root, taken when it is reaped, adds what the samples missed (a task
shorter than a sample, CPU burnt between two). Metering is best effort: a process
that vanishes or that we may not read is skipped, never a failed job.
"""

from __future__ import annotations

import logging
import resource
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)

SAMPLE_EVERY = 0.5  # seconds between walks of the process trees
GPU_EVERY = 5.0  # seconds between nvidia-smi queries, which cost far more than a walk
GPU_QUERY = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
GPU_TIMEOUT = 10.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float  # user + system time of the tree
    peak_memory: int  # bytes resident, whole tree at once
    gpu_memory: int | None = None  # bytes at peak; None where it was not measured


def add_up(usages: Iterable[Usage | None]) -> Usage | None:
    """Usage of several processes side by side (the nodes of one attempt): sums; None if none."""
    known = [u for u in usages if u is not None]
    if not known:
        return None
    gpus = [u.gpu_memory for u in known if u.gpu_memory is not None]
    return Usage(
        cpu_seconds=sum(u.cpu_seconds for u in known),
        peak_memory=sum(u.peak_memory for u in known),
        gpu_memory=sum(gpus) if gpus else None,
    )


@dataclass
class _Tree:
    root: psutil.Process | None
    cpu: float = 0.0
    peak: int = 0
    gpu: int | None = None


class UsageMeter:
    """Samples the process trees of running jobs; `finish` gives a job's usage once reaped."""

    def __init__(self, every: float = SAMPLE_EVERY, gpu_every: float = GPU_EVERY):
        self._every = every
        self._gpu_every = gpu_every
        self._gpu = shutil.which("nvidia-smi") is not None
        self._last_gpu_query = float("-inf")
        self._trees: dict[int, _Tree] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, pid: int) -> None:
        """Start metering the tree under `pid`; call it before the process can be reaped."""
        try:
            root = psutil.Process(pid)
        except psutil.Error:
            root = None  # its rusage at exit is all we will have
        tree = _Tree(root)
        if root is not None:  # a first look now: a job shorter than a sample still shows its shell
            tree.cpu, tree.peak, _ = _measure(root)
        with self._lock:
            self._trees[pid] = tree
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="usage-meter", daemon=True)
                self._thread.start()

    def finish(self, pid: int, rusage: resource.struct_rusage | None) -> Usage:
        """Stop metering `pid`: the samples combined with the rusage of its reaping (wait4),
        which covers the root and every descendant waited for."""
        with self._lock:
            tree = self._trees.pop(pid, None) or _Tree(None)
        cpu, peak = tree.cpu, tree.peak
        if rusage is not None:
            cpu = max(cpu, rusage.ru_utime + rusage.ru_stime)
            # A child starts as a (v)fork of this process, and its ru_maxrss (KiB) keeps our
            # peak from before its exec: only a figure above our own is the job's.
            if rusage.ru_maxrss > resource.getrusage(resource.RUSAGE_SELF).ru_maxrss:
                peak = max(peak, rusage.ru_maxrss * 1024)
        return Usage(cpu_seconds=cpu, peak_memory=peak, gpu_memory=tree.gpu)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(GPU_TIMEOUT + self._every)

    def sample(self) -> None:
        """One walk of every tree (and, when due, one nvidia-smi query)."""
        with self._lock:
            trees = list(self._trees.values())
        if not trees:
            return
        gpu_by_pid = self._query_gpu()
        for tree in trees:
            if tree.root is None:
                continue
            cpu, rss, pids = _measure(tree.root)
            with self._lock:
                tree.cpu = max(tree.cpu, cpu)
                tree.peak = max(tree.peak, rss)
                if gpu_by_pid is not None:
                    used = sum(gpu_by_pid.get(p, 0) for p in pids)
                    tree.gpu = max(tree.gpu or 0, used)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.sample()
            except Exception:  # a meter never takes a job down; keep sampling the others
                log.warning("usage sampling failed", exc_info=True)

    def _query_gpu(self) -> dict[int, int] | None:
        """GPU memory in bytes by pid, or None where there is no nvidia-smi, it is not yet
        time to ask again, or it failed."""
        now = time.monotonic()
        if not self._gpu or now - self._last_gpu_query < self._gpu_every:
            return None
        self._last_gpu_query = now
        try:
            done = subprocess.run(GPU_QUERY, capture_output=True, text=True, timeout=GPU_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as err:
            log.debug("nvidia-smi failed: %s", err)
            return None
        if done.returncode != 0:
            log.debug("nvidia-smi exited %d: %s", done.returncode, done.stderr.strip())
            return None
        return parse_gpu_apps(done.stdout)


def parse_gpu_apps(text: str) -> dict[int, int]:
    """`pid, MiB` lines of nvidia-smi's compute apps as bytes by pid; odd lines ([N/A]) skipped."""
    used: dict[int, int] = {}
    for line in text.splitlines():
        pid, _, mib = (part.strip() for part in line.partition(","))
        if pid.isdigit() and mib.isdigit():
            used[int(pid)] = used.get(int(pid), 0) + int(mib) * MIB
    return used


def _measure(root: psutil.Process) -> tuple[float, int, set[int]]:
    """CPU seconds (reaped children included), resident bytes and pids of the tree now.

    Parents are read before their children, so a child reaped between two reads is
    missed for this sample rather than counted twice.
    """
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        processes = [root]
    cpu, rss, pids = 0.0, 0, set()
    for process in processes:
        try:
            with process.oneshot():
                times = process.cpu_times()
                resident = process.memory_info().rss
        except psutil.Error:
            continue
        cpu += times.user + times.system + times.children_user + times.children_system
        rss += resident
        pids.add(process.pid)
    return cpu, rss, pids
