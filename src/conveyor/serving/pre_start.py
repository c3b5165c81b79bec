"""Backend.AI's `pre_start_actions` of a model-definition.yaml, run once before the replicas start.

Supported: `write_file` (filename, body, mode, append), `mkdir` (path), `run_command` (command:
a list or a string, run in the model folder), `log` (message). Relative paths start in the
model folder.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

from conveyor.errors import ConveyorError
from conveyor.serving.folder import PreStartAction

log = logging.getLogger(__name__)
ACTIONS = ("write_file", "mkdir", "run_command", "log")


class PreStartError(ConveyorError):
    exit_code = 2


def check_actions(actions: list[PreStartAction], source: Path) -> None:
    for number, action in enumerate(actions):
        if action.action not in ACTIONS:
            raise PreStartError(f"{source}: pre_start_actions[{number}]: unknown action"
                                f" {action.action!r}; supported: {', '.join(ACTIONS)}")


def run_actions(actions: list[PreStartAction], folder: Path, env: Mapping[str, str]) -> None:
    for number, action in enumerate(actions):
        args = action.args
        where = f"pre_start_actions[{number}] ({action.action})"
        try:
            if action.action == "write_file":
                target = folder / args["filename"]
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "a" if args.get("append") else "w", encoding="utf-8") as out:
                    out.write(str(args.get("body", "")))
                if "mode" in args:
                    target.chmod(int(str(args["mode"]), 8))
            elif action.action == "mkdir":
                (folder / args["path"]).mkdir(parents=True, exist_ok=True)
            elif action.action == "run_command":
                command = args["command"]
                words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
                done = subprocess.run(words, cwd=folder, env=dict(env), capture_output=True,
                                      text=True, timeout=600)
                if done.returncode != 0:
                    last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
                    raise PreStartError(f"{where}: `{shlex.join(words)}` failed with exit code"
                                        f" {done.returncode}: {last[0]}")
            else:
                log.info("%s", args.get("message", ""))
        except KeyError as err:
            raise PreStartError(f"{where}: the argument {err.args[0]!r} is missing") from None
        except (OSError, ValueError, subprocess.TimeoutExpired) as err:
            raise PreStartError(f"{where}: {err}") from None
