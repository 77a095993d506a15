"""A study as a Slurm job array on a real (one-node) cluster: a killed and a cancelled task
re-run through resume, a preempted task re-queued, bad requests refused, and the same unit files
as a local run. `.ci/run` starts the cluster; without one these tests skip and say why."""

import importlib.util
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.lm.test_study import tiny_study
from tttlab.cli import main
from tttlab.studies.config import SlurmConfig
from tttlab.studies.executors import task_states, wait_for
from tttlab.studies.plan import run_study, study_progress
from tttlab.studies.units import collect, read_jobs

from .test_executors import results
from .test_scaling import fractions


def _no_cluster() -> str | None:
    """Why these tests cannot run here, or None when a Slurm controller answers."""
    if importlib.util.find_spec("submitit") is None:
        return "submitit is not installed (pip install 'tttlab[slurm]')"
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH: no Slurm here (.ci/run starts a one-node Slurm)"
    try:
        subprocess.run(["sinfo", "--noheader"], capture_output=True, timeout=15, check=True)
    except (subprocess.SubprocessError, OSError) as err:
        return f"no Slurm controller answers `sinfo` ({err})"
    return None


WHY = _no_cluster()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(WHY is not None, reason=WHY or "")]


@pytest.fixture(autouse=True)
def outside_a_job(monkeypatch):
    """A test run inside a Slurm job must not take its array variables as shards or tasks."""
    for name in list(os.environ):
        if name.startswith("SLURM_"):
            monkeypatch.delenv(name)


def until(condition, what: str, timeout: float = 60) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        time.sleep(0.1)


def running_steps(task: str) -> list[str]:
    """The job steps Slurm still runs for `task` (none once the old step is torn down)."""
    out = subprocess.run(["squeue", "--noheader", "--steps", "--jobs", task, "--format", "%i"],
                         capture_output=True, text=True, check=False).stdout  # fmt: skip
    return out.split()


def log_says(folder: Path, task: str, text: str, stream: str = "out") -> bool:
    log = folder / read_jobs(folder)[-1]["logs"] / f"{task}_0_log.{stream}"
    return log.is_file() and text in log.read_text()


def test_a_job_array_survives_a_killed_and_a_cancelled_task_and_matches_the_local_run(
    tmp_path, capsys
):
    local = run_study(fractions(tmp_path / "local", (0.5, 1.0), seeds=(0, 1)))
    # Two tasks at a time, so the last task is still pending when it is cancelled.
    plan = fractions(tmp_path / "slurm", (0.5, 1.0), seeds=(0, 1))
    first = run_study(plan, SlurmConfig(executor="slurm", array_parallelism=2, wait=False))
    folder = first.folder
    assert first.job is not None and first.ran == [] and len(first.missing) == 4
    tasks = list(read_jobs(folder)[0]["tasks"].values())
    assert tasks == [f"{first.job}_{i}" for i in range(4)]

    until(lambda: task_states(tasks[:1])[tasks[0]] == "RUNNING", "the first task to start")
    subprocess.run(["scancel", "--full", "--signal=KILL", tasks[0]], check=True)
    subprocess.run(["scancel", tasks[-1]], check=True)
    now = wait_for(folder, plan.units(), progress=False)
    ids = [u.id for u in plan.units()]
    assert now.done == ids[1:-1] and now.running == {} and now.missing == []
    assert list(now.failed) == [ids[0], ids[-1]]
    assert now.failed[ids[-1]] == f"task {tasks[-1]} was cancelled before it started"

    assert main(["study", "status", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "done: 2, running: 0, failed: 2, missing: 0" in out and f"failed   {ids[0]}" in out
    assert main(["study", "report", str(folder)]) == 2, "no report while units are missing"
    assert main(["study", "resume", str(folder), "--wait"]) == 0
    out = capsys.readouterr().out
    assert "submitted 2 unit(s)" in out and "report:" in out
    assert sorted(read_jobs(folder)[1]["tasks"]) == sorted([ids[0], ids[-1]])
    assert results(folder, plan) == results(local.folder, plan), "Slurm and local units agree"


def test_the_language_study_runs_as_a_job_array_and_matches_the_local_run(tmp_path, capsys):
    local = run_study(tiny_study(tmp_path / "local", sizes=("0.4m", "1.5m")))
    study = tiny_study(tmp_path / "slurm", sizes=("0.4m", "1.5m"))
    done = run_study(study, SlurmConfig(executor="slurm"))
    ids = [u.id for u in study.units()]
    assert done.job is not None and done.ran == ids and len(ids) == 2
    assert done.report is not None and done.report.is_file()
    assert list(read_jobs(done.folder)[0]["tasks"]) == done.ran
    rows = [r["per_doc"] for r in collect(done.folder, study.units())]
    assert rows == [r["per_doc"] for r in collect(local.folder, study.units())]
    assert main(["study", "status", str(done.folder)]) == 0
    assert "done: 2, running: 0, failed: 0, missing: 0" in capsys.readouterr().out


def test_a_preempted_task_requeues_itself_and_finishes_its_unit(tmp_path):
    plan = fractions(tmp_path, (1.0,))
    plan.base.train.epochs = 150  # a unit of a few seconds: long enough to be preempted mid-way
    done = run_study(plan, SlurmConfig(executor="slurm", wait=False))
    (task,) = read_jobs(done.folder)[0]["tasks"].values()
    until(lambda: log_says(done.folder, task, "tttlab: task"), "the unit to start")
    # What Slurm sends a job it preempts (and, before the time limit, one that times out).
    subprocess.run(["scancel", "--signal=USR2", task], check=True)
    until(lambda: log_says(done.folder, task, "Requeued"), "submitit to re-queue the task")
    # Slurm holds a re-queued job back for two minutes; the test does not wait for that.
    until(lambda: task_states([task])[task] == "PENDING", "the task to be pending again")
    # Starting it again before the old step is torn down races on this one-node cluster.
    until(
        lambda: log_says(done.folder, task, "srun: error", "err") or not running_steps(task),
        "the old step to end",
    )
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], check=True)
    now = wait_for(done.folder, plan.units(), progress=False, poll_s=0.5)
    assert now.done == ["fraction=1.0,seed=0"] and not now.failed
    log = done.folder / read_jobs(done.folder)[0]["logs"] / f"{task}_0_log.out"
    assert log.read_text().count(f"tttlab: task {task} runs") == 2, "ran again after re-queue"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--partition", "no-such-partition"], "partition 'no-such-partition' does not exist"),
        (["--cpus-per-task", "4096"], "cpus_per_task=4096 but the largest node"),
        (["--mem-gb", "100000"], "mem_gb=100000.0 but the largest node"),
    ],
)
def test_a_request_the_cluster_cannot_run_is_refused_before_anything_is_written(
    tmp_path, capsys, flags, message
):
    args = "study dataset-size --dataset digits --model linear --k 5 --fractions 1 --executor slurm"
    assert main([*args.split(), "--out", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_node_that_cannot_see_the_study_folder_is_named_as_the_likely_cause(tmp_path):
    plan = fractions(tmp_path, (1.0,))
    done = run_study(plan, SlurmConfig(executor="slurm", wait=False, sbatch=("hold",)))
    # As a node without the shared file system would: the task finds no folder for its logs.
    shutil.rmtree(done.folder / read_jobs(done.folder)[0]["logs"])
    subprocess.run(["scontrol", "release", done.job], check=True)
    now = wait_for(done.folder, plan.units(), False)
    (why,) = now.failed.values()
    assert "without a log" in why and "file system the compute nodes share" in why
    assert study_progress(plan, done.folder).failed == now.failed
