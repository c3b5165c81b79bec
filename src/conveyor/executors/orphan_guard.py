"""Kills a job's process group if the process that runs the job dies first.

    python -m conveyor.executors.orphan_guard PGID   (stdin: a pipe from the job's runner)

On a Ray node the job's bash session is its own group, so it would outlive a Ray
worker that is killed or crashes. The runner starts this guard with a pipe on its
stdin and writes "done" when the job has ended; if the pipe closes without it, the
runner is gone, and the guard SIGKILLs the group.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    pgid = int(sys.argv[1])
    if sys.stdin.read().strip() != "done":
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


if __name__ == "__main__":
    main()
