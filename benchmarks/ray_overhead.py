"""Per-task overhead of the Ray executor against the local executor, on the same 100-task chain.

    .venv/bin/python benchmarks/ray_overhead.py [--tasks 100] [--repeat 2]

Starts a one-node Ray cluster on loopback in a temporary folder (and stops it by pid),
then runs, in this one process, engine_overhead's chain of `true` tasks (each waits for
the one before, so nothing overlaps) through Conveyor's engine with the local executor
and with the Ray executor. Prints seconds per task for each and their ratio. Best of --repeat runs.
Not a test: it prints figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from engine_overhead import chain, time_conveyor  # this folder: run as a script


def start_ray(root: Path) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
         "--node-ip-address=127.0.0.1", "--num-cpus=2", f"--temp-dir={root / 't'}",
         "--include-dashboard=false", "--disable-usage-stats"],
        check=True, capture_output=True, env=dict(os.environ))
    return f"127.0.0.1:{port}"


def stop_ray(root: Path) -> None:
    import psutil

    ours = [p for p in psutil.process_iter(["cmdline"])
            if any(str(root) in part for part in (p.info["cmdline"] or []))]
    for process in ours:
        process.terminate()
    _, alive = psutil.wait_procs(ours, timeout=10)
    for process in alive:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bray-", dir="/tmp"))  # short: Ray's sockets live here
    os.environ.update(HOME=str(root), RAY_USAGE_STATS_ENABLED="0",
                      CONVEYOR_HOME=str(root / "home"))
    os.environ.pop("CONVEYOR_DB_URL", None)
    try:
        address = start_ray(root)
        on_ray = {"executor": "ray", "ray_address": address}
        time_conveyor(chain(3), root)  # warm imports and the database file
        time_conveyor(chain(3), root, **on_ray)  # join the cluster, start its workers
        spec = chain(args.tasks)
        local = min(time_conveyor(spec, root) for _ in range(args.repeat))
        ray = min(time_conveyor(spec, root, **on_ray) for _ in range(args.repeat))
        print(f"{'executor':<10}{'tasks':>6}{'seconds':>10}{'ms/task':>10}")
        for label, elapsed in (("local", local), ("ray", ray)):
            print(f"{label:<10}{args.tasks:>6}{elapsed:>10.2f}{elapsed / args.tasks * 1000:>10.1f}")
        print(f"ray / local: {ray / local:.1f}x per task"
              f" (+{(ray - local) / args.tasks * 1000:.1f} ms per task)")
    finally:
        stop_ray(root)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
