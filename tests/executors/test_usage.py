"""Usage metering with real processes: CPU time, peak memory of a whole tree, GPU memory by pid."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

from conveyor.executors.base import Exit, JobKey, Launch
from conveyor.executors.local import LocalExecutor
from conveyor.executors.usage import MIB, Usage, UsageMeter, add_up, parse_gpu_apps


def run_job(command: str, cwd: Path) -> Exit:
    executor = LocalExecutor(lambda *_: None)
    try:
        executor.start(Launch(JobKey("r", "t", 1), command, cwd, dict(os.environ)))
        exit_ = executor.wait(30)
    finally:
        executor.close()
    assert exit_ is not None and exit_.ok, exit_
    assert exit_.usage is not None
    return exit_


def test_a_task_holding_200_mb_reports_its_peak(load, tmp_path):
    usage = run_job(load(mb=200, hold=1), tmp_path).usage
    assert 180 * MIB <= usage.peak_memory < 600 * MIB
    assert usage.cpu_seconds > 0


def test_cpu_burnt_by_a_child_of_a_child_is_counted(load, tmp_path):
    # bash -> bash -> python: the burner is the grandchild of the job's root
    usage = run_job(f"bash -c {shlex.quote(load(burn=1) + '; true')}; true", tmp_path).usage
    assert 0.7 <= usage.cpu_seconds <= 3.0


def test_a_task_shorter_than_a_sample_still_gets_its_cpu_time(load, tmp_path):
    usage = run_job(load(burn=0.3), tmp_path).usage
    assert 0.25 <= usage.cpu_seconds <= 2.0


def test_a_small_task_is_not_charged_with_the_memory_of_the_engine(tmp_path):
    # the job is spawned from this process: its rusage starts with our own peak (tens of MB)
    assert run_job("sleep 0.2", tmp_path).usage.peak_memory < 20 * MIB


def test_two_processes_at_once_report_the_sum_of_their_memory(load, tmp_path):
    # the rusage at exit knows only the largest process: the sum comes from the samples
    usage = run_job(f"{load(mb=200, hold=1.2)} & {load(mb=200, hold=1.2)}; wait", tmp_path).usage
    assert usage.peak_memory >= 360 * MIB


def test_a_stopped_job_still_reports_what_it_used(load, tmp_path):
    executor = LocalExecutor(lambda *_: None)
    try:
        started = executor.start(Launch(JobKey("r", "t", 1), load(mb=100, hold=60), tmp_path,
                                        dict(os.environ)))
        time.sleep(1.0)
        executor.stop(started.key, grace=0.5)
        exit_ = executor.wait(10)
    finally:
        executor.close()
    assert exit_ is not None and exit_.signal is not None
    assert exit_.usage.peak_memory >= 90 * MIB


def test_a_process_that_is_gone_yields_zero_usage_not_an_error():
    meter = UsageMeter(every=0.05)
    child = subprocess.Popen(["true"])
    child.wait()
    meter.watch(child.pid)  # reaped already: nothing to read
    meter.sample()
    assert meter.finish(child.pid, None) == Usage(0.0, 0, None)
    meter.close()


def test_add_up_sums_the_nodes_of_an_attempt():
    assert add_up([]) is None and add_up([None]) is None
    total = add_up([Usage(1.5, 100, None), None, Usage(0.5, 50, 7)])
    assert total == Usage(2.0, 150, 7)
    assert add_up([Usage(1.0, 10, None)]).gpu_memory is None


def test_parse_gpu_apps_sums_by_pid_and_skips_odd_lines():
    text = "123, 1024\n456, [N/A]\n123, 512\n\nNo running processes found\n"
    assert parse_gpu_apps(text) == {123: 1536 * MIB}


def fake_nvidia_smi(folder: Path, body: str) -> None:
    """An `nvidia-smi` on PATH (a stand-in where no GPU is): runs `body` as a shell script."""
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


def test_gpu_memory_is_summed_over_the_pids_of_the_tree(tmp_path, monkeypatch, load):
    pids = tmp_path / "pids"
    # two processes of the job on the GPU, and one of someone else that must not count
    fake_nvidia_smi(tmp_path / "bin", f'while read p; do echo "$p, 300"; done < {pids}\n'
                                      'echo "1, 5000"')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    meter = UsageMeter(every=0.1, gpu_every=0.1)
    job = subprocess.Popen(
        ["bash", "-c", f"{load(hold=1)} & echo $! >> {pids}; {load(hold=1)} & echo $! >> {pids}; wait"])
    meter.watch(job.pid)
    deadline = time.monotonic() + 10
    while job.poll() is None and time.monotonic() < deadline:
        meter.sample()
        time.sleep(0.1)
    assert meter.finish(job.pid, None).gpu_memory == 600 * MIB
    meter.close()


def test_a_failing_nvidia_smi_leaves_gpu_memory_unknown(tmp_path, monkeypatch, load):
    fake_nvidia_smi(tmp_path / "bin", "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    exit_ = run_job(load(mb=50, hold=0.8), tmp_path)
    assert exit_.usage.gpu_memory is None and exit_.usage.peak_memory >= 45 * MIB

