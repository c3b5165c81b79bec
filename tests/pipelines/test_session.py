"""What a task process sees: its folders, mounts, environment and FastTrack's /home/work paths."""

from __future__ import annotations

from conveyor.executors.base import JobKey
from conveyor.pipelines import session
from conveyor.pipelines.resources import Grant
from conveyor.pipelines.spec import parse_pipeline


def env_of(store, run, task: str) -> dict[str, str]:
    pairs = (line.text.partition("=") for line in store.read_logs(run.id, task))
    return {key: value for key, _, value in pairs}


def test_environment_layers_and_session_variables(write_pipeline, store, settings, monkeypatch):
    from conveyor.pipelines.runs import create_run
    from conveyor.pipelines.scheduler import RunEngine

    monkeypatch.setenv("FROM_MACHINE", "machine")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("LAYER", "machine")
    path = write_pipeline("""
        name: envs
        environment:
          envs: {LAYER: pipeline, PIPELINE_ONLY: "1", FLAG: true}
        tasks:
        - name: show
          command: env
          environment:
            envs: {LAYER: task, TASK_ONLY: 2}
          mounts: ["shared-data:data", "models"]
          resources: {cpu: 1.5}
    """)
    run_id = create_run(store, settings, path, env={"OVERRIDE": "cli"})
    RunEngine(store, settings, run_id).execute()
    run = store.get_run(run_id)
    env = env_of(store, run, "show")
    assert env["FROM_MACHINE"] == "machine"
    assert env["LAYER"] == "task"
    assert env["PIPELINE_ONLY"] == "1" and env["FLAG"] == "true" and env["TASK_ONLY"] == "2"
    assert env["OVERRIDE"] == "cli"
    assert env["CONVEYOR_RUN_ID"] == run_id
    assert env["CONVEYOR_TASK"] == "show"
    assert env["CONVEYOR_OUTPUT"] == str(settings.runs_root / run_id / "outputs" / "show")
    assert env["CONVEYOR_WORK"] == str(settings.runs_root / run_id / "work" / "show" / "rank0")
    assert env["CONVEYOR_MOUNT_DATA"] == str(settings.storage_root / "shared-data")
    assert env["CONVEYOR_MOUNT_MODELS"] == str(settings.storage_root / "models")
    assert env["OMP_NUM_THREADS"] == "2"
    assert "CUDA_VISIBLE_DEVICES" not in env, "a machine without GPUs leaves it alone"


def test_cli_env_overrides_every_layer(write_pipeline, execute, store):
    path = write_pipeline("""
        name: envs
        environment: {envs: {X: pipeline}}
        tasks:
        - {name: show, command: "echo X=$X", environment: {envs: {X: task}}}
    """)
    run = execute(path, env={"X": "cli"})
    assert env_of(store, run, "show") == {"X": "cli"}


def test_mounts_share_files_between_tasks_and_home_work_paths_resolve(
    write_pipeline, execute, store, settings
):
    path = write_pipeline("""
        name: mounts
        tasks:
        - name: write
          command: |
            echo "written by $CONVEYOR_TASK" > /home/work/data/note.txt
            echo "output" > "$CONVEYOR_OUTPUT/result.txt"
          mounts: ["exchange:data"]
        - name: read
          command: cat /home/work/in/note.txt
          dependencies: [write]
          mounts: ["exchange:in"]
    """)
    run = execute(path)
    assert run.status == "succeeded"
    assert (settings.storage_root / "exchange" / "note.txt").read_text() == "written by write\n"
    assert [line.text for line in store.read_logs(run.id, "read")] == ["written by write"]
    output = settings.runs_root / run.id / "outputs" / "write" / "result.txt"
    assert output.read_text() == "output\n"


def test_home_work_rewrite_leaves_similar_paths_alone(tmp_path, settings):
    pipeline = parse_pipeline(
        "name: p\ntasks:\n- {name: t, command: 'ls /home/work/x /home/workspace /home/work',"
        " workdir: /home/work/x, mounts: [x]}\n",
        "inline",
    )
    ctx = session.RunContext("r1", pipeline, tmp_path, {}, settings, settings.capacity)
    launch = session.prepare(ctx, pipeline.tasks[0], JobKey("r1", "t", 1), Grant(1, 0))
    work = settings.runs_root / "r1" / "work" / "t" / "rank0"
    assert launch.command == f"ls {work}/x /home/workspace {work}"
    assert launch.cwd == work / "x"
    assert (work / "x").resolve() == (settings.storage_root / "x").resolve()


def test_gpu_machine_sets_visible_devices(tmp_path, settings, monkeypatch):
    monkeypatch.setenv("CONVEYOR_CAPACITY", "cpu=4,mem=8g,gpu=4")
    from conveyor.settings import load_settings

    gpu_settings = load_settings()
    pipeline = parse_pipeline("name: p\ntasks:\n- {name: t, command: 'true'}\n", "inline")
    ctx = session.RunContext("r1", pipeline, tmp_path, {}, gpu_settings, gpu_settings.capacity)
    task = pipeline.tasks[0]
    with_gpus = session.prepare(ctx, task, JobKey("r1", "t", 1), Grant(1, 0, ((1, 1.0), (3, 0.5))))
    assert with_gpus.env["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert with_gpus.env["CONVEYOR_GPU_SHARES"] == "1.5"
    without = session.prepare(ctx, task, JobKey("r1", "t", 1), Grant(1, 0))
    assert without.env["CUDA_VISIBLE_DEVICES"] == ""


def test_mount_variable_names():
    assert session.mount_variable("data") == "CONVEYOR_MOUNT_DATA"
    assert session.mount_variable("my-models.v2") == "CONVEYOR_MOUNT_MY_MODELS_V2"
