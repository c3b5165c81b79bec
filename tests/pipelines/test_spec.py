"""The pipeline file: a real FastTrack file loads unchanged; every problem is `file:line: field: message`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conveyor.errors import SpecError
from conveyor.pipelines.resources import Capacity
from conveyor.pipelines.spec import Mount, Pipeline, load_pipeline

GIB = 1024**3


def write(tmp_path: Path, text: str) -> Path:
    """The YAML, dedented, with its first line as line 1."""
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Pipeline:
    return load_pipeline(write(tmp_path, text))


def problems(tmp_path: Path, text: str, capacity: Capacity | None = None) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        load_pipeline(path, capacity)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return [p.replace(str(path), "p.yaml", 1) for p in caught.value.problems]


def only_problem(tmp_path: Path, text: str) -> str:
    [problem] = problems(tmp_path, text)
    return problem


# the real FastTrack file


def test_fasttrack_example_loads_unchanged(fasttrack_file: Path) -> None:
    pipeline = load_pipeline(fasttrack_file)

    assert pipeline.name == "torchtune-example"
    assert pipeline.version == "25.6.5.post2"
    assert pipeline.ownership == {"domain_name": "default", "scope": "personal"}
    assert pipeline.environment.envs == {"HF_TOKEN": "hf_XXXXXXXXX"}
    assert [t.name for t in pipeline.tasks] == [
        "download-model", "fine-tune-single", "fine-tune-multi", "evaluate"]
    assert pipeline.dependencies == {
        "download-model": [],
        "fine-tune-single": ["download-model"],
        "fine-tune-multi": ["download-model"],
        "evaluate": ["fine-tune-single", "fine-tune-multi"],
    }
    download, single, multi, evaluate = pipeline.tasks
    assert (download.resources.cpu, download.resources.mem) == (4, 16 * GIB)
    assert download.resources.cuda_shares == 0
    assert single.resources.cuda_shares == 5
    assert evaluate.resources.cuda_shares == 1.5
    assert single.resource_opts.shmem == 2 * GIB
    assert (multi.cluster_mode, multi.cluster_size, multi.copies) == ("multi-node", 2, 2)
    assert all(t.mounts == [Mount(folder="baift-examples", alias="examples")]
               for t in pipeline.tasks)
    assert download.environment.project == "default"
    assert download.environment.scaling_group == "nvidia-H100"
    assert download.environment.image == "cr.backend.ai/cloud/python:3.10-ubuntu20.04"
    assert download.command.splitlines() == [
        "cd /home/work/examples", "pip install -r requirements.txt", "./download.sh"]
    assert evaluate.command == "sleep 10"


def test_fasttrack_example_on_a_small_machine_names_every_resources_line(fasttrack_file: Path) -> None:
    small = Capacity(cpu=2, mem=8 * GIB, gpus=0)

    with pytest.raises(SpecError) as caught:
        load_pipeline(fasttrack_file, small)

    found = caught.value.problems
    assert [p.split(": asks for")[0] for p in found] == [
        f"{fasttrack_file}:27: tasks[download-model].resources",
        f"{fasttrack_file}:52: tasks[fine-tune-single].resources",
        f"{fasttrack_file}:82: tasks[fine-tune-multi].resources",
        f"{fasttrack_file}:105: tasks[evaluate].resources",
    ]
    assert "4 CPUs (the machine has 2)" in found[0]
    assert "16g of memory (the machine has 8g)" in found[0]
    assert "10 GPU shares (the machine has 0 GPUs) (2 nodes)" in found[2]
    assert "CONVEYOR_CAPACITY (now cpu=2,mem=8g,gpu=0)" in found[3]


def test_fasttrack_example_on_a_big_machine(fasttrack_file: Path) -> None:
    big = Capacity(cpu=64, mem=512 * GIB, gpus=16)
    assert len(load_pipeline(fasttrack_file, big).tasks) == 4

    # eight GPUs hold one node's five shares, but not both nodes' ten
    [problem] = _problems_on(Capacity(cpu=64, mem=512 * GIB, gpus=8), fasttrack_file)
    assert problem.startswith(f"{fasttrack_file}:82: tasks[fine-tune-multi].resources: asks for 10")


def _problems_on(capacity: Capacity, fasttrack_file: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_pipeline(fasttrack_file, capacity)
    return caught.value.problems


# one test per kind of problem


def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        tasks:
        - name: a
           command: echo
    """)
    assert problem.startswith("p.yaml:4: not valid YAML: ")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        schedule: daily
        tasks:
        - {name: a, command: echo}
    """)
    assert problem == ("p.yaml:2: schedule: unknown key; known keys here: version, name,"
                       " description, ownership, environment, tasks")


def test_unknown_key_inside_resources(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        tasks:
        - name: a
          command: echo
          resources:
            cpu: 1
            gpu: 1
    """)
    assert problem == ("p.yaml:7: tasks[a].resources.gpu: unknown key;"
                       " known keys here: cpu, mem, cuda.shares")


def test_wrong_type(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        tasks:
        - name: a
          command: echo
          resources:
            cpu: lots
    """)
    assert problem.startswith("p.yaml:6: tasks[a].resources.cpu: ")
    assert "valid number" in problem and "'lots'" in problem


def test_malformed_size(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        tasks:
        - name: a
          command: echo
          resources:
            mem: 16x
    """)
    assert problem.startswith("p.yaml:6: tasks[a].resources.mem: '16x' is not a size;")
    assert "16g" in problem


def test_infinite_size_is_a_spec_error(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        tasks:
        - name: a
          command: echo
          resources: {mem: .inf}
    """)
    assert problem.startswith("p.yaml:5: tasks[a].resources.mem: ")


def test_duplicate_task_names(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        tasks:
        - name: a
          command: echo
        - name: a
          command: echo
    """)
    assert problem == ("p.yaml:5: tasks[1].name: 'a' is used by another task;"
                       " task names must be unique")


def test_unknown_dependency(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        tasks:
        - name: a
          command: echo
        - name: b
          command: echo
          dependencies:
          - a
          - prepare
    """)
    assert problem == ("p.yaml:9: tasks[b].dependencies: 'prepare' is not a task of this"
                       " pipeline; known tasks: a, b")


def test_self_dependency(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        tasks:
        - name: a
          command: echo
          dependencies: [a]
    """)
    assert problem == "p.yaml:5: tasks[a].dependencies: a task cannot depend on itself"


def test_dependency_cycle_names_the_cycle(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        tasks:
        - name: start
          command: echo
        - name: a
          command: echo
          dependencies: [start, b]
        - name: b
          command: echo
          dependencies: [c]
        - name: c
          command: echo
          dependencies: [a]
    """)
    assert problem.startswith("p.yaml:7: tasks[a].dependencies: dependency cycle a -> b -> c -> a;")


def test_single_node_with_two_nodes(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        tasks:
        - name: a
          command: echo
          cluster_size: 2
    """)
    assert problem.startswith("p.yaml:5: tasks[a].cluster_size: cluster_size is 2 but cluster_mode is single-node")


def test_empty_command(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        tasks:
        - name: a
          command: "  "
    """)
    assert problem.startswith("p.yaml:4: tasks[a].command: the command is empty;")


def test_bad_mount(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        tasks:
        - name: a
          command: echo
          mounts: [a/b]
    """)
    assert problem.startswith("p.yaml:5: tasks[a].mounts[0].folder: 'a/b' is not a folder name;")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        name: x
        tasks:
        - name: a
          command: echo one
          command: echo two
    """)
    assert problem == "p.yaml:5: tasks[a].command: the key appears twice; keep one"


def test_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, """
        - name: a
          command: echo
    """)
    assert problem == "p.yaml:1: the file must be a mapping with `name` and `tasks`"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as caught:
        load_pipeline(path)
    assert caught.value.problems == [f"{path}: no such file; give the path of a pipeline.yaml"]


def test_missing_tasks(tmp_path: Path) -> None:
    assert only_problem(tmp_path, "name: x\n") == "p.yaml:1: tasks: is required"


def test_several_problems_are_reported_together_in_line_order(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        name: x
        tasks:
        - name: a
          command: echo
          resources: {cpu: lots}
        - name: b
          command: echo
          dependencies: [nope]
          colour: blue
    """)
    assert [p.split(": ")[0:2] for p in found] == [
        ["p.yaml:5", "tasks[a].resources.cpu"],
        ["p.yaml:8", "tasks[b].dependencies"],
        ["p.yaml:9", "tasks[b].colour"],
    ]


# accepted forms


def test_durations_sizes_env_and_mounts_are_normalised(tmp_path: Path) -> None:
    pipeline = load(tmp_path, """
        name: x
        environment:
          envs: {WORKERS: 4, DEBUG: true, RATIO: 0.5, NAME: plain}
        tasks:
        - name: a
          command: echo
          timeout: 30m
          retry: {max_attempts: 3, delay: 2s}
          resources: {cpu: 0.5, mem: 1.5g, cuda.shares: "0.25"}
          environment:
            envs: {OFFLINE: 1, ENABLED: false}
          mounts: [data, "models:/home/work/x", "raw:input"]
    """)
    [task] = pipeline.tasks
    assert task.timeout == 1800.0
    assert (task.retry.max_attempts, task.retry.delay) == (3, 2.0)
    assert (task.resources.cpu, task.resources.mem, task.resources.cuda_shares) == (
        0.5, int(1.5 * GIB), 0.25)
    assert pipeline.environment.envs == {
        "WORKERS": "4", "DEBUG": "true", "RATIO": "0.5", "NAME": "plain"}
    assert task.environment.envs == {"OFFLINE": "1", "ENABLED": "false"}
    assert [(m.folder, m.name) for m in task.mounts] == [
        ("data", "data"), ("models", "x"), ("raw", "input")]


def test_defaults(tmp_path: Path) -> None:
    [task] = load(tmp_path, "name: x\ntasks:\n- {name: a, command: echo}\n").tasks
    assert (task.cluster_mode, task.copies, task.skip, task.timeout) == (
        "single-node", 1, False, None)
    assert (task.resources.cpu, task.resources.mem, task.resources.cuda_shares) == (1.0, 0, 0.0)
    assert (task.retry.max_attempts, task.retry.delay) == (1, 0.0)
