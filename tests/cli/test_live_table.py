"""In a terminal, a foreground run draws a live table coloured by status."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

SKY_BLUE = "38;5;117"  # rich's sky_blue1: running
GREEN = "\x1b[32m"  # succeeded
PINK = "38;5;218"  # rich's pink1: skipped


def run_in_terminal(args: list[str], timeout: float = 60) -> str:
    leader, follower = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="120", LINES="40")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "conveyor", *args], stdin=follower,
                            stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the terminal closed: the command ended
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        proc.wait(10)
        os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


def test_live_table_shows_running_then_final_colours(write_pipeline):
    path = write_pipeline("""
        name: live
        tasks:
        - {name: slow, command: "sleep 1.5"}
        - {name: later, command: "true", dependencies: [slow]}
        - {name: nope, command: "true", skip: true}
    """)
    screen = run_in_terminal(["run", str(path)])
    assert SKY_BLUE in screen, "a running task is drawn sky blue while the run goes on"
    assert PINK in screen
    final = screen[screen.rindex("run "):]
    assert "succeeded" in final and GREEN in final
