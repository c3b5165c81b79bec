"""The session a task process runs in: its work folder, mounted storage folders and environment.

Like a FastTrack session, each task gets a work folder (FastTrack's /home/work)
where every mount `folder:alias` appears as `alias`, a link to the storage
folder, so writes land in the folder and later tasks see them. Commands written
for FastTrack name `/home/work/<alias>`; Conveyor rewrites `/home/work` in the
command (and in `workdir`) to the session's work folder. Scripts that hard-code
the path inside their own files should read `$CONVEYOR_WORK` instead.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from conveyor.executors.base import JobKey, Launch
from conveyor.pipelines.resources import Capacity, Grant
from conveyor.pipelines.spec import Pipeline, Task
from conveyor.settings import Settings

FASTTRACK_WORK = re.compile(r"/home/work(?![\w.-])")


@dataclass(frozen=True)
class RunContext:
    """What every session of one run shares."""

    run_id: str
    pipeline: Pipeline
    pipeline_dir: Path
    env_overrides: dict[str, str]
    settings: Settings
    capacity: Capacity  # where the tasks run: this machine, or a whole cluster

    def output_dir(self, task: str) -> Path:
        return self.settings.runs_root / self.run_id / "outputs" / task

    def work_dir(self, task: str, rank: int) -> Path:
        return self.settings.runs_root / self.run_id / "work" / task / f"rank{rank}"


def mount_variable(alias: str) -> str:
    return "CONVEYOR_MOUNT_" + re.sub(r"[^A-Za-z0-9]", "_", alias).upper()


def prepare(ctx: RunContext, task: Task, key: JobKey, grant: Grant) -> Launch:
    """Create the session's folders and links, and build what the executor needs."""
    output = ctx.output_dir(task.name)
    work = ctx.work_dir(task.name, key.rank)
    output.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # `conveyor` and `python` in a task are those of the environment running the engine
    tools = os.path.dirname(sys.executable)
    if tools not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join(filter(None, [tools, env.get("PATH")]))
    env.update(ctx.pipeline.environment.envs)
    env.update(task.environment.envs)
    env.update(ctx.env_overrides)
    for mount in task.mounts:
        folder = ctx.settings.storage_root / mount.folder
        folder.mkdir(parents=True, exist_ok=True)
        _link(work / mount.name, folder)
        env[mount_variable(mount.name)] = str(folder)
    env.update(_session_variables(ctx, task, key, grant, output, work))
    env.setdefault("OMP_NUM_THREADS", str(max(1, math.ceil(grant.cpu))))  # as many as it was given
    cwd = ctx.pipeline_dir
    if task.workdir:
        cwd = ctx.pipeline_dir / FASTTRACK_WORK.sub(str(work), task.workdir)
    command = FASTTRACK_WORK.sub(str(work), task.shell_command(ctx.capacity))
    return Launch(key=key, command=command, cwd=cwd, env=env,
                  request=task.replica_request(ctx.capacity),
                  scaling_group=task.environment.scaling_group, cluster_size=task.cluster_size)


def _session_variables(
    ctx: RunContext, task: Task, key: JobKey, grant: Grant, output: Path, work: Path
) -> dict[str, str]:
    size = str(task.cluster_size)
    rank = str(key.rank)
    variables = {
        "CONVEYOR_RUN_ID": ctx.run_id,
        "CONVEYOR_TASK": task.name,
        "CONVEYOR_ATTEMPT": str(key.attempt),
        "CONVEYOR_OUTPUT": str(output),
        "CONVEYOR_WORK": str(work),
        "CONVEYOR_CLUSTER_SIZE": size,
        "CONVEYOR_CLUSTER_RANK": rank,
        "CONVEYOR_CLUSTER_MAIN": "127.0.0.1",  # every node of a cluster is this machine
        "BACKENDAI_CLUSTER_SIZE": size,
        "BACKENDAI_CLUSTER_LOCAL_RANK": rank,
        "BACKENDAI_CLUSTER_HOST": "main1" if key.rank == 0 else f"sub{key.rank}",
        "CONVEYOR_GPU_SHARES": f"{sum(share for _, share in grant.gpus):g}",
    }
    if ctx.capacity.gpus:
        variables["CUDA_VISIBLE_DEVICES"] = grant.visible_devices
    return variables


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        if link.is_symlink() and link.resolve() == target.resolve():
            return
        if link.is_symlink() or link.is_file():
            link.unlink()
        else:
            raise FileExistsError(f"{link} exists and is not a link to a storage folder")
    link.symlink_to(target, target_is_directory=True)
