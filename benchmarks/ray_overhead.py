"""Per-task overhead of the Ray executor against the local executor, on the same 100-task chain.

    .venv/bin/python benchmarks/ray_overhead.py [--tasks 100] [--repeat 2]

Starts a one-node Ray cluster on loopback in a temporary folder (and stops it by pid),
then runs, in this one process, a chain of `true` tasks (each waits for the one before,
so nothing overlaps) through Conveyor's engine with the local executor and with the
Ray executor. Prints seconds per task for each and their ratio. Best of --repeat runs.
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
import time
from pathlib import Path


def chain(n: int) -> str:
    lines = ["name: chain", "tasks:"]
    for i in range(n):
        deps = f", dependencies: [t{i - 1}]" if i else ""
        lines.append(f"- {{name: t{i}, command: 'true', resources: {{cpu: 0.5}}{deps}}}")
    return "\n".join(lines) + "\n"


def time_run(spec: str, folder: Path, executor: str, address: str | None) -> float:
    from conveyor.pipelines.runs import create_run
    from conveyor.pipelines.scheduler import RunEngine
    from conveyor.settings import load_settings
    from conveyor.store.repository import Store

    path = folder / f"p{time.monotonic_ns()}.yaml"
    path.write_text(spec)
    settings = load_settings()
    store = Store(settings.db_url)
    try:
        started = time.perf_counter()
        run_id = create_run(store, settings, path, executor=executor, ray_address=address)
        status = RunEngine(store, settings, run_id).execute()
        elapsed = time.perf_counter() - started
    finally:
        store.close()
    if status != "succeeded":
        raise SystemExit(f"the {executor} run ended {status}")
    return elapsed


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
        time_run(chain(3), root, "local", None)  # warm imports and the database file
        time_run(chain(3), root, "ray", address)  # join the cluster, start its workers
        spec = chain(args.tasks)
        local = min(time_run(spec, root, "local", None) for _ in range(args.repeat))
        ray = min(time_run(spec, root, "ray", address) for _ in range(args.repeat))
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
