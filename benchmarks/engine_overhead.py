"""Engine overhead per task: Conveyor (SQLite store, local executor) against a plain subprocess loop.

    .venv/bin/python benchmarks/engine_overhead.py [--repeat 3]

Runs, in this one process: (a) a chain of 100 `true` tasks, (b) 100 independent
`true` tasks and a join, each through Conveyor's engine and as a plain
`subprocess.run(["true"])` loop; then the marginal cost per task, (chain of 60
minus chain of 10) / 50, so that start-up does not count. Best of --repeat runs.
Not a test: it prints figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path


def chain(n: int) -> str:
    lines = ["name: chain", "tasks:"]
    for i in range(n):
        deps = f", dependencies: [t{i - 1}]" if i else ""
        lines.append(f"- {{name: t{i}, command: 'true'{deps}}}")
    return "\n".join(lines) + "\n"


def fan_out_and_join(n: int) -> str:
    lines = ["name: fan", "tasks:"]
    lines += [f"- {{name: t{i}, command: 'true'}}" for i in range(n)]
    lines.append(f"- {{name: join, command: 'true', dependencies: [{', '.join(f't{i}' for i in range(n))}]}}")
    return "\n".join(lines) + "\n"


def time_conveyor(spec: str, folder: Path, **run_options) -> float:
    """Seconds to create and execute a run of `spec`; `run_options` go to `create_run`."""
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
        run_id = create_run(store, settings, path, **run_options)
        status = RunEngine(store, settings, run_id).execute()
        elapsed = time.perf_counter() - started
    finally:
        store.close()
    assert status == "succeeded", status
    return elapsed


def time_baseline(n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        subprocess.run(["true"], check=True)
    return time.perf_counter() - started


def best(repeat: int, measure) -> float:
    return min(measure() for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["CONVEYOR_HOME"] = str(folder / "home")
        os.environ.pop("CONVEYOR_DB_URL", None)
        time_conveyor(chain(3), folder)  # warm imports and the database file
        print(f"{'case':<28}{'tasks':>6}{'conveyor s':>12}{'baseline s':>12}"
              f"{'overhead ms/task':>18}{'ratio':>8}")
        for label, spec, n in (
            ("chain of 100", chain(100), 100),
            ("100 independent + join", fan_out_and_join(100), 101),
        ):
            ours = best(args.repeat, lambda spec=spec: time_conveyor(spec, folder))
            base = best(args.repeat, lambda n=n: time_baseline(n))
            print(f"{label:<28}{n:>6}{ours:>12.3f}{base:>12.3f}"
                  f"{(ours - base) / n * 1000:>18.2f}{ours / base:>8.1f}")
        long_chain = best(args.repeat, lambda: time_conveyor(chain(60), folder))
        short_chain = best(args.repeat, lambda: time_conveyor(chain(10), folder))
        marginal = (long_chain - short_chain) / 50
        base_each = best(args.repeat, lambda: time_baseline(50)) / 50
        print(f"marginal cost per task (chain 60 - chain 10) / 50: {marginal * 1000:.2f} ms"
              f" (bare subprocess.run: {base_each * 1000:.2f} ms;"
              f" overhead {(marginal - base_each) * 1000:.2f} ms, ratio {marginal / base_each:.1f})")


if __name__ == "__main__":
    main()
